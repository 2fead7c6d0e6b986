"""The Timekeeper: the coordinator of the causal virtual clock (DESIGN.md, "coordinator").

It owns the shared-memory clock page and is the only component that moves its offset: when
every actor of the deployment has been waiting for a quiescence window, it jumps virtual time
to the earliest deadline and wakes exactly the actors that are due.
"""

from revati.timekeeper.clock_page import ClockPage

__all__ = ["ClockPage"]
