"""Collectives resolved across ranks: end = max(arrivals) + duration.

Each NCCL call on a communicator of several ranks is an *arrival* from each rank (the shim's
nccl.c/collectives.c): a key (communicator, channel, sequence number; every rank numbers its calls
alike), the number of participants and this rank's slot, the predicted duration, and the time
the call starts on its stream. That start may itself follow collectives the rank has not seen
resolved yet, so it is an expression max(b, end(ref) + a, ...). Once every participant has
arrived and the ends its arrivals refer to are known, the collective resolves:

    end = max(value of each arrival) + max(durations)

and the collectives whose arrivals referred to it may resolve in turn. A rank asks for an end
when its host needs an absolute time (a sync, a query); RESOLVE waits until then.

A *join* (op 255) is a one-participant collective of no duration on a process's private comm:
the shim's way to name the max of more pending ends than its positions hold.

CollectiveWaits holds the requests that wait for ends, beside the table that answers them: the
single-host Timekeeper's (upstream.LocalUpstream) and the multi-host Coordinator's use the same
one, with the same lost-rank check: a wait for a collective that lacks a rank whose process has
left can never end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Key = tuple[int, int, int]  # (comm, chan, seq); comm as a signed 64-bit integer
Ref = tuple[Key, int]  # (key, a): end(key) + a

OP_NAMES = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce", "send", "recv", "all_to_all")
OP_JOIN = 255
# Resolved ends kept for arrivals that still refer to them; older ones are dropped per channel.
_KEEP_RESOLVED = 100_000


def comm_hex(comm: int) -> str:
    return f"{comm & 0xFFFFFFFFFFFFFFFF:016x}"


def op_name(op: int) -> str:
    return "join" if op == OP_JOIN else OP_NAMES[op] if 0 <= op < len(OP_NAMES) else f"op {op}"


def slot_rank(key: Key, slot: int) -> int:
    """The rank of a participant slot: the rank itself for a collective; src (slot 0) or dst
    (slot 1) for a send/recv channel (1 + src * 65536 + dst)."""
    chan = key[1]
    if chan == 0:
        return slot
    src, dst = divmod(chan - 1, 65536)
    return src if slot == 0 else dst


@dataclass(eq=False)
class Collective:
    key: Key
    op: int
    nparts: int
    dur: int = 0
    arrivals: dict[int, tuple[int, list[Ref]]] = field(default_factory=dict)  # slot -> (b, refs)
    pids: dict[int, int] = field(default_factory=dict)  # slot -> pid of the arriving process


def arrivals(body: list):
    """The arrivals of an ARRIVE payload (protocol.py), in order: (key, op, participants, slot,
    duration_ns, b, refs); later arrivals of a batch may refer to earlier ones."""
    count, i = int(body[0]), 1
    for _ in range(count):
        comm, chan, seq, op, nparts, slot, dur, b, nrefs = body[i:i + 9]
        i += 9
        refs = [((body[i + 4 * k], body[i + 4 * k + 1], body[i + 4 * k + 2]), body[i + 4 * k + 3])
                for k in range(nrefs)]
        i += 4 * nrefs
        yield (comm, chan, seq), op, nparts, slot, dur, b, refs


def resolve_keys(body: list, first: int) -> list[Key]:
    """The (comm, chan, seq) keys of a RESOLVE payload (protocol.py), from index first on."""
    return [(body[k], body[k + 1], body[k + 2]) for k in range(first, len(body) - 2, 3)]


class CollectiveTable:
    """Pending and resolved collectives of one deployment (one Timekeeper; not thread-safe)."""

    def __init__(self) -> None:
        self.pending: dict[Key, Collective] = {}
        self.ends: dict[Key, int] = {}
        self._floor: dict[tuple[int, int], int] = {}  # (comm, chan) -> highest dropped seq
        self._dependents: dict[Key, list[Key]] = {}
        self.members: dict[int, dict[int, int]] = {}  # comm -> rank -> pid
        self.sizes: dict[int, int] = {}
        self.dead: set[int] = set()  # pids of processes that left
        self.resolved = 0
        self.arrivals = 0

    # ---------------------------------------------------------------- input

    def comm(self, comm: int, nranks: int, rank: int, pid: int) -> None:
        self.members.setdefault(comm, {})[rank] = pid
        self.sizes[comm] = nranks

    def arrive(self, key: Key, op: int, nparts: int, slot: int, dur: int, b: int, refs: list[Ref],
               pid: int) -> list[Key]:
        """Records one arrival. Returns the keys this resolved (it and its dependents)."""
        self.arrivals += 1
        c = self.pending.get(key)
        if c is None:
            if key in self.ends:
                return []  # a duplicate of a resolved call: ignore
            c = self.pending[key] = Collective(key, op, nparts)
        c.arrivals[slot] = (b, refs)
        c.pids[slot] = pid
        c.dur = max(c.dur, dur)
        if op != OP_JOIN and key[1] == 0:
            self.members.setdefault(key[0], {}).setdefault(slot, pid)
        return self._try(key)

    def end(self, key: Key) -> int | None:
        """The end of a collective (virtual ns), or None while it is not resolved."""
        e = self.ends.get(key)
        if e is not None:
            return e
        floor = self._floor.get((key[0], key[1]))
        if floor is not None and key[2] <= floor:
            return 0  # resolved long ago and dropped: any later arrival is past it
        return None

    # ------------------------------------------------------------ resolving

    def _try(self, first: Key) -> list[Key]:
        done: list[Key] = []
        work = [first]
        while work:
            key = work.pop()
            c = self.pending.get(key)
            if c is None or len(c.arrivals) < c.nparts:
                continue
            top = 0
            blocked = None
            for b, refs in c.arrivals.values():
                v = b
                for ref, a in refs:
                    e = self.end(ref)
                    if e is None:
                        blocked = ref
                        break
                    v = max(v, e + a)
                if blocked is not None:
                    break
                top = max(top, v)
            if blocked is not None:
                self._dependents.setdefault(blocked, []).append(key)
                continue
            del self.pending[key]
            self.ends[key] = top + c.dur
            self.resolved += 1
            done.append(key)
            work.extend(self._dependents.pop(key, ()))
        if len(self.ends) > _KEEP_RESOLVED:
            self._prune()
        return done

    def _prune(self) -> None:
        drop = len(self.ends) - _KEEP_RESOLVED // 2
        for key in list(self.ends)[:drop]:
            del self.ends[key]
            ch = (key[0], key[1])
            if key[2] > self._floor.get(ch, -1):
                self._floor[ch] = key[2]

    # ------------------------------------------------------------ diagnosis

    def blockers(self, key: Key, _seen: set | None = None) -> list[Key]:
        """The unresolved collectives that keep key from resolving: it, if it lacks a participant,
        and those its arrivals wait for (the earlier calls a rank also lacks)."""
        seen = _seen if _seen is not None else set()
        if key in seen or self.end(key) is not None:
            return []
        seen.add(key)
        c = self.pending.get(key)
        if c is None:
            return [key]
        out: list[Key] = [key] if len(c.arrivals) < c.nparts else []
        for _, refs in c.arrivals.values():
            for ref, _a in refs:
                if self.end(ref) is None:
                    out += self.blockers(ref, seen)
        return out

    def missing(self, key: Key) -> list[tuple[int, int | None]]:
        """(rank, pid or None) of the participants that have not arrived."""
        c = self.pending.get(key)
        nparts = c.nparts if c else self.sizes.get(key[0], 0)
        arrived = set(c.arrivals) if c else set()
        out = []
        for slot in range(nparts):
            if slot not in arrived:
                rank = slot_rank(key, slot)
                out.append((rank, self.members.get(key[0], {}).get(rank)))
        return out

    def lost_rank(self, key: Key) -> tuple[int, int] | None:
        """(rank, pid) of a participant key lacks whose process has left, if any."""
        for rank, pid in self.missing(key):
            if pid is not None and pid in self.dead:
                return rank, pid
        return None

    def describe(self, key: Key) -> str:
        c = self.pending.get(key)
        comm, chan, seq = key
        what = op_name(c.op) if c else "collective"
        where = f"comm {comm_hex(comm)} seq {seq}"
        if chan:
            src, dst = divmod(chan - 1, 65536)
            where += f" (send/recv {src} -> {dst})"
        arrived = sorted((slot_rank(key, s), p) for s, p in (c.pids.items() if c else ()))
        parts = [f"{what} on {where}: arrived "
                 + (", ".join(f"rank {r} (pid {p})" for r, p in arrived) or "nobody")
                 + f" of {c.nparts if c else self.sizes.get(comm, '?')}"]
        for rank, pid in self.missing(key):
            state = "never joined the communicator" if pid is None else \
                f"pid {pid}, exited" if pid in self.dead else f"pid {pid}, has not called it"
            parts.append(f"missing rank {rank} ({state})")
        return "; ".join(parts)


@dataclass(eq=False)
class Wait:
    """A RESOLVE that waits: the ends of keys, answered to req once every one is resolved.

    who is the requester, for its owner to answer: an Actor (the Timekeeper) or a host (the
    Coordinator). done: answered, or its requester left."""

    keys: list[Key]
    req: int
    who: object = None
    done: bool = False


class CollectiveWaits:
    """The waits for collectives' ends of one CollectiveTable (not thread-safe).

    Its owner answers: ask() tells whether a request waits, arrive() and completed() which waits
    can be answered now (the owner sends their ends, ends(), and sets done), lost_rank() whether
    one never can be."""

    def __init__(self, table: CollectiveTable) -> None:
        self.table = table
        self._by_key: dict[Key, list[Wait]] = {}

    def ends(self, keys: list[Key]) -> list[int]:
        """The ends of keys (virtual ns), -1 for each not resolved."""
        out = []
        for k in keys:
            e = self.table.end(k)
            out.append(-1 if e is None else e)
        return out

    def ask(self, keys: list[Key], req: int, who: object, wait: bool) -> Wait | None:
        """A RESOLVE for keys. None: answer it now with ends(keys) (it does not wait, or every
        end is known). Otherwise its Wait, kept until every key is resolved."""
        ends = [self.table.end(k) for k in keys]
        if not wait or all(e is not None for e in ends):
            return None
        w = Wait(keys, req, who)
        for k, e in zip(keys, ends):
            if e is None:
                self._by_key.setdefault(k, []).append(w)
        return w

    def arrive(self, body: list, pid: int) -> list[Wait]:
        """Records an ARRIVE payload's arrivals from pid; returns the waits they completed."""
        done: list[Key] = []
        for arrival in arrivals(body):
            done += self.table.arrive(*arrival, pid)
        return self.completed(done) if done else []

    def completed(self, resolved: list[Key]) -> list[Wait]:
        """The waits not done that the resolved keys leave with every end known, each once, in
        the order they wait for those keys."""
        out: list[Wait] = []
        for key in resolved:
            for w in self._by_key.pop(key, ()):
                if not w.done and w not in out and all(self.table.end(k) is not None for k in w.keys):
                    out.append(w)
        return out

    def pending(self) -> list[Wait]:
        """The waits not done, each once."""
        out: list[Wait] = []
        seen: set[int] = set()
        for ws in self._by_key.values():
            for w in ws:
                if not w.done and id(w) not in seen:
                    seen.add(id(w))
                    out.append(w)
        return out

    def blockers(self, w: Wait) -> list[Key]:
        """The unresolved collectives that hold w up (CollectiveTable.blockers of its keys)."""
        seen: set = set()
        out: list[Key] = []
        for k in w.keys:
            out += self.table.blockers(k, seen)
        return out

    def lost_rank(self) -> tuple[Wait, Key, int, int] | None:
        """(wait, collective, rank, pid): a pending wait held up by a collective that lacks a rank
        whose process has left, so that it can never end; None if there is none."""
        if not self.table.dead:
            return None
        for w in self.pending():
            for k in self.blockers(w):
                lost = self.table.lost_rank(k)
                if lost is not None:
                    return w, k, lost[0], lost[1]
        return None
