"""The Timekeeper: the owner of the causal virtual clock (DESIGN.md, "coordinator (Timekeeper)").

It owns the shared-memory clock page and is the only component that moves its offset: when
every actor of the deployment has been waiting for a quiescence window, it jumps virtual time
to the earliest deadline and wakes exactly the actors that are due.

Modules: timekeeper.py (the Timekeeper), actor.py, tasks.py (threads' scheduler states),
upstream.py (who decides a quiescent host's jump: LocalUpstream on one host), collectives.py,
clock_page.py, governor.py (the contention governor), protocol.py (the wire messages). Across
hosts ("coordinator" means only this): coordinator.py (`revati coordinator`), relay.py (a
host's upstream to it), link.py (their TCP link), multihost_cli.py, netns.py.
"""

from revati.timekeeper.clock_page import ClockPage

__all__ = ["ClockPage"]
