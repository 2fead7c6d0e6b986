"""collectives.CollectiveWaits: the requests for collectives' ends that wait, and the lost-rank
check, shared by the single-host Timekeeper and the multi-host Coordinator."""

from __future__ import annotations

from revati.timekeeper.collectives import OP_JOIN, CollectiveTable, CollectiveWaits

COMM = 7
MS = 1_000_000


def arrive(waits: CollectiveWaits, seq: int, slot: int, b: int, pid: int, refs=(), comm: int = COMM,
           op: int = 0, nparts: int = 2):
    """One ARRIVE payload of one arrival (protocol.py's layout), an all-reduce of 1 ms by default."""
    body = [1, comm, 0, seq, op, nparts, slot, MS if op != OP_JOIN else 0, b, len(refs)]
    for (key, a) in refs:
        body += [*key, a]
    return waits.arrive(body, pid)


def test_a_wait_is_answered_once_every_key_has_ended():
    waits = CollectiveWaits(CollectiveTable())
    k1, k2 = (COMM, 0, 1), (COMM, 0, 2)
    w = waits.ask([k1, k2], 5, "rank 0", wait=True)
    assert w is not None and waits.pending() == [w]
    assert arrive(waits, 1, 0, 10 * MS, 100) == []
    assert arrive(waits, 1, 1, 20 * MS, 101) == []  # k1 ended; k2 has not
    assert waits.ends([k1, k2]) == [21 * MS, -1]
    assert arrive(waits, 2, 0, 30 * MS, 100) == []
    assert arrive(waits, 2, 1, 25 * MS, 101) == [w]
    assert waits.ends(w.keys) == [21 * MS, 31 * MS] and w.req == 5 and w.who == "rank 0"


def test_asks_that_do_not_wait_and_answered_waits():
    waits = CollectiveWaits(CollectiveTable())
    k = (COMM, 0, 1)
    assert waits.ask([k], 1, None, wait=False) is None  # a query: answered now with -1
    assert waits.ends([k]) == [-1]
    w = waits.ask([k], 2, None, wait=True)
    w.done = True  # its requester left
    arrive(waits, 1, 0, 0, 100)
    assert arrive(waits, 1, 1, 0, 101) == [] and waits.pending() == []
    assert waits.ask([k], 3, None, wait=True) is None  # ended already


def test_a_lost_rank_behind_an_earlier_collective():
    """Rank 1 (pid 101) left before the all-reduce; rank 0 waits for a join (the shim's max of
    pending ends, on its private comm) that refers to the all-reduce's end. That wait can never
    end, through the all-reduce."""
    table = CollectiveTable()
    waits = CollectiveWaits(table)
    table.comm(COMM, 2, 0, 100)
    table.comm(COMM, 2, 1, 101)
    k1, k2 = (COMM, 0, 1), (99, 0, 1)
    arrive(waits, 1, 0, 0, 100)
    assert arrive(waits, 1, 0, 0, 100, refs=[(k1, 0)], comm=99, op=OP_JOIN, nparts=1) == []
    w = waits.ask([k2], 9, None, wait=True)
    assert waits.blockers(w) == [k1]
    assert waits.lost_rank() is None  # every process is alive: rank 1 may still come
    table.dead.add(101)
    assert waits.lost_rank() == (w, k1, 1, 101)
    w.done = True
    assert waits.lost_rank() is None
