"""Local doors are owner-only (issue 15, docs/security.md): the Timekeeper's socket, its clock
page, the prediction sidecar's ipc socket and a generated deployment secret are mode 0600, so
another local user can neither join the clock, read it, nor ask for predictions."""

from __future__ import annotations

import os
import stat
import time

from revati.timekeeper import auth
from revati.timekeeper.timekeeper import Timekeeper
from revati.timekeeper.multihost_cli import coordinator_secret


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_timekeepers_socket_and_clock_page_are_owner_only():
    old = os.umask(0)  # even with a permissive umask
    try:
        with Timekeeper() as tk:
            assert _mode(tk.sock_path) == 0o600
            assert _mode(tk.page_path) == 0o600
    finally:
        os.umask(old)


def test_a_generated_secret_is_owner_only_and_kept(tmp_path):
    secret, path, made = coordinator_secret(tmp_path / "s")
    assert made and _mode(path) == 0o600 and len(secret) == 64
    assert coordinator_secret(tmp_path / "s") == (secret, tmp_path / "s", False)  # read back, not replaced
    secret2, path2, made2 = coordinator_secret(None)  # a fresh folder of its own
    assert made2 and _mode(path2) == 0o600 and _mode(path2.parent) == 0o700 and secret2 != secret
    (tmp_path / "short").write_bytes(b"abc")
    try:
        auth.read_secret(tmp_path / "short")
        raise AssertionError("a 3-byte secret was accepted")
    except auth.SecretError as e:
        assert "at least 16" in str(e)


def test_the_sidecars_ipc_socket_is_owner_only(tmp_path):
    from revati.predictor import Predictor
    from revati.sidecar import SidecarServer

    sock = tmp_path / "sc.sock"
    server = SidecarServer(f"ipc://{sock}", predictor=Predictor.load("h100-sxm"))
    server.start()
    try:
        t0 = time.monotonic()
        while not sock.exists() and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        assert _mode(sock) == 0o600
    finally:
        server.shutdown()
