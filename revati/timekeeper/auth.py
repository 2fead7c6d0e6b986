"""The deployment's secret and the HMAC challenge-response of the relay/coordinator handshake.

Only a peer that knows the deployment's secret may join its clock as a host (docs/security.md).
The secret never crosses the link: each side sends a fresh random nonce and proves that it knows
the secret by an HMAC-SHA256 over both nonces, so a recorded handshake is worth nothing on the
next connection (its nonces differ), and a relay learns that it reached the real coordinator.

    relay -> coord  R_HELLO     [version, host name, nonce_r]
    coord -> relay  R_CHALLENGE [nonce_c, proof(secret, "coordinator", nonce_r, nonce_c)]
    relay -> coord  R_AUTH      [proof(secret, "relay", nonce_c, nonce_r, host name)]
    coord -> relay  R_WELCOME ... or ERROR {"code": "auth"}, and the connection is closed

Where the secret comes from: the operator creates a Kubernetes Secret per EmulatedDeployment and
mounts it into the coordinator and the replica pods' sidecars (--secret-file); `revati
coordinator` without one generates a secret and writes it, owner-only, where relays can be
pointed at it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

NONCE_BYTES = 32
PROOF_BYTES = 32  # SHA-256
MIN_SECRET_BYTES = 16
_ROLES = {"coordinator": b"revati-coordinator\0", "relay": b"revati-relay\0"}


class SecretError(ValueError):
    """No usable secret: the message says which file and what was wrong."""


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def new_secret() -> bytes:
    """A fresh secret: 64 hex characters (printable, as a Kubernetes Secret's value is)."""
    return secrets.token_hex(32).encode()


def proof(secret: bytes, role: str, *parts: bytes) -> bytes:
    """HMAC-SHA256(secret, role tag | each part, length-prefixed): what `role` sends to prove it
    knows the secret. Length prefixes keep ("ab", "c") and ("a", "bc") apart."""
    m = hmac.new(secret, _ROLES[role], hashlib.sha256)
    for p in parts:
        m.update(len(p).to_bytes(4, "big"))
        m.update(p)
    return m.digest()


def check(secret: bytes, role: str, got: object, *parts: bytes) -> bool:
    """Whether got is role's proof over parts (constant time in its contents)."""
    return type(got) is bytes and len(got) == PROOF_BYTES and hmac.compare_digest(got, proof(secret, role, *parts))


def read_secret(path: str | os.PathLike) -> bytes:
    """The secret in a file (surrounding whitespace stripped). Raises SecretError."""
    p = Path(path)
    try:
        data = p.read_bytes().strip()
    except OSError as e:
        raise SecretError(f"cannot read the deployment's secret {p}: {e.strerror or e}") from None
    if len(data) < MIN_SECRET_BYTES:
        raise SecretError(f"the deployment's secret {p} holds {len(data)} bytes; at least {MIN_SECRET_BYTES} "
                          "are needed")
    return data


def write_secret(path: str | os.PathLike) -> bytes:
    """Generates a secret into a new file that only its owner can read (mode 0600; an existing
    file is never overwritten). Returns the secret."""
    secret = new_secret()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secret + b"\n")
    finally:
        os.close(fd)
    return secret


def load_or_create(path: str | os.PathLike) -> tuple[bytes, bool]:
    """(the secret in path, False), or (a new one written there, True) if the file is absent."""
    try:
        return write_secret(path), True
    except FileExistsError:
        return read_secret(path), False
