"""Hosts on one machine: Linux network namespaces joined by a bridge, for running a multi-host
deployment (a coordinator and a relay per host: coordinator.py, relay.py) without a cluster.

Each host is a namespace with one veth into a bridge in the root namespace (which holds
<prefix>.1, where a `revati coordinator` listens); commands run in a host with `wrap()`, which
also gives them a /dev/shm of their own, as on a separate machine. Needs root (CAP_NET_ADMIN
and CAP_SYS_ADMIN).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field


def available() -> str | None:
    """None when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root (ip netns)"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and p.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {p.stderr.strip()}")
    return p


@dataclass
class Hosts:
    """Namespaces `names` on prefix.0/24: the bridge is prefix.1, host i is prefix.(i + 2)."""

    names: list[str]
    prefix: str = "10.77.0"
    bridge: str = "rv-br0"
    addresses: dict[str, str] = field(default_factory=dict)
    interfaces: dict[str, str] = field(default_factory=dict)

    @property
    def gateway(self) -> str:
        return f"{self.prefix}.1"

    def up(self) -> "Hosts":
        self.down()
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, ns in enumerate(self.names):
            octet = i + 2
            outer, inner = f"{self.bridge[:8]}h{octet}", f"{self.bridge[:8]}n{octet}"
            _ip("netns", "add", ns)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", ns)
            _ip("link", "set", outer, "master", self.bridge)
            _ip("link", "set", outer, "up")
            _ip("-n", ns, "addr", "add", f"{self.prefix}.{octet}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            self.addresses[ns], self.interfaces[ns] = f"{self.prefix}.{octet}", inner
        return self

    def down(self) -> None:
        for i, ns in enumerate(self.names):
            _ip("netns", "del", ns, check=False)
            _ip("link", "del", f"{self.bridge[:8]}h{i + 2}", check=False)  # (goes with its peer, lazily)
        _ip("link", "del", self.bridge, check=False)

    def wrap(self, ns: str, cmd: list[str]) -> list[str]:
        """cmd run in host ns, with a private /dev/shm (vLLM tells ranks on one node apart by
        shared memory they can both open)."""
        return ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount -t tmpfs -o size=8g tmpfs /dev/shm && exec "$@"', "sh", *cmd]

    def __enter__(self) -> "Hosts":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()
