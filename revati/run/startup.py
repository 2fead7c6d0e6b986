"""Start-up progress of `revati run`: the phases from the environment to the load, with wall time.

Until the load generator starts, `revati run` waits on things it does not do itself: the
prediction sidecar, then per replica the engine's server (API server imports and model config,
the engine core process, dummy weights, torch.compile, CUDA-graph capture, warm-up), then the
health probe. The phases are detected from real signals:

* the runner's own steps (`enter`): the environment (dilation calibration, the Timekeeper), the
  sidecar's start, the server's Popen, the health probe's first 200, the load generator's start
  and bench's "Starting main benchmark run";
* the engine's log lines, tailed as they are written (`PHASE_MARKERS`: the first line that
  names a phase switches to it);
* the engine core's process appearing under the API server (its process title, the adapter's
  `process_kind`), which no log line marks.

The time between two signals goes to the phase the earlier one named; a phase entered twice
(vLLM captures CUDA graphs once to profile memory, then warms up, then captures them for good)
adds up its spells. NOTE: the times are this process's monotonic clock when the signal was
seen (0.2 s resolution), not the log lines' timestamps: those come from the emulated process's
clock, which is virtual under the time warp.

On a terminal the phases are a live rich table; otherwise one plain line per finished phase.
`phases()` goes into the report (`emulation.startup`). One live display at a time: `finish` ends
this one before the load generator's progress bar; the load generator's start (its dataset and
tokenizer) and the load are `record`ed from that bar's signals.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from revati.launch.processes import descendants

if TYPE_CHECKING:
    from rich.console import Console

    from revati.engines import EngineAdapter

#: (key, label) of every phase, in the order they normally come.
PHASES: list[tuple[str, str]] = [
    ("environment", "environment (dilation, Timekeeper)"),
    ("sidecar", "prediction sidecar"),
    ("engine_start", "engine process start (imports)"),
    ("model_config", "model config"),
    ("engine_core", "engine core start"),
    ("weights", "weights (dummy)"),
    ("torch_compile", "torch.compile"),
    ("cudagraph_capture", "CUDA-graph capture"),
    ("warmup", "warm-up (memory profile, KV cache, kernels)"),
    ("server_ready", "server ready (API routes, health probe)"),
    ("router", "router start"),
    ("load_start", "load generator start (dataset, tokenizer)"),
    ("load", "load (the benchmark)"),
]
LABELS = dict(PHASES)

#: Per engine name: (regex, phase) on its log lines. A line that matches switches to the phase.
PHASE_MARKERS: dict[str, list[tuple[re.Pattern[str], str]]] = {
    "vllm": [(re.compile(p), k) for p, k in [
        (r"non-default args:", "model_config"),
        (r"Initializing a V1 LLM engine", "engine_core"),
        (r"Loading model from scratch|Starting to load model|Loading weights took", "weights"),
        (r"Starting torch\.compile|Dynamo bytecode transform|Compiling a graph for|Directly load AOT compilation|"
         r"reconstructed serializable fn", "torch_compile"),
        (r"torch\.compile took|Initial profiling/warmup run", "warmup"),
        (r"Capturing CUDA graphs", "cudagraph_capture"),
        (r"Graph capturing finished|Available KV cache memory", "warmup"),
        (r"init engine \(profile, create kv cache, warmup model\) took|Supported tasks:|Starting vLLM API server",
         "server_ready"),
    ]],
}


@dataclass
class _Spell:
    phase: str
    replica: int | None
    start: float
    end: float | None = None


class StartupProgress:
    """The start-up phases of one run, shown as they happen.

    Created at the run's start (the environment phase starts then); entered as a context manager
    when the first child starts (the display and the log watcher run until `finish`); `enter`
    at each of the runner's steps; `watch` for a server's log (its engine core is looked for among
    the processes that appear meanwhile), `ready` once it answered its probe; `record` for a phase timed elsewhere (the load).
    """

    def __init__(self, console: "Console", engine: "EngineAdapter | None" = None, *, poll_s: float = 0.2,
                 t0: float | None = None):
        self.console = console
        self.engine = engine
        self.poll_s = poll_s
        self.t0 = time.monotonic() if t0 is None else t0
        self.spells: list[_Spell] = [_Spell("environment", None, self.t0)]
        self.notes: list[str] = []
        self._markers = PHASE_MARKERS.get(engine.name if engine is not None else "vllm", [])
        self._plain = not console.is_terminal
        self._lock = threading.Lock()
        self._watched: tuple[Path, int | None] | None = None
        self._pos = 0
        self._partial = ""
        self._known: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live = None
        self._finished = False

    # ---- the runner's signals

    def enter(self, phase: str, replica: int | None = None, *, source: tuple | None = None) -> None:
        """Switches to `phase` now (a no-op when it is the current one). source: the watched
        log the signal came from; it is dropped when that log is no longer watched."""
        now = time.monotonic()
        done = None
        with self._lock:
            if source is not None and source is not self._watched:
                return
            cur = self.spells[-1]
            if cur.end is None:
                if cur.phase == phase and cur.replica == replica:
                    return
                cur.end = now
                done = cur
            self.spells.append(_Spell(phase, replica, now))
        if done is not None and self._plain:
            self._print_spell(done)

    def watch(self, log_path: Path, replica: int | None = None) -> None:
        """Tail the engine's log at log_path (about to be written anew: an old one is removed)."""
        Path(log_path).unlink(missing_ok=True)
        known = set(_children(os.getpid()))
        with self._lock:
            self._watched = (Path(log_path), replica)
            self._known = known
            self._pos = 0
            self._partial = ""

    def ready(self) -> None:
        """The watched server answered its probe: its log and processes are no longer read."""
        with self._lock:
            self._watched = None

    def record(self, phase: str, start: float, end: float) -> None:
        """A phase that another display timed (monotonic start and end), added after `finish`."""
        with self._lock:
            self.spells.append(_Spell(phase, None, start, end))

    def finish(self) -> None:
        """Ends the current phase and the display. Idempotent."""
        if self._finished:
            return
        self._finished = True
        now = time.monotonic()
        with self._lock:
            if self.spells and self.spells[-1].end is None:
                self.spells[-1].end = now
                last = self.spells[-1]
            else:
                last = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._live is not None:
            self._live.stop()
        elif last is not None and self._plain:
            self._print_spell(last)
        totals = self.totals()
        self.console.print("revati run: start-up " + ", ".join(f"{k} {v:.1f} s" for k, v in totals.items())
                           + f"; {now - self.t0:.0f} s in all", highlight=False, markup=False, soft_wrap=True)

    def __enter__(self) -> "StartupProgress":
        if not self._plain:
            from rich.live import Live

            self._live = Live(self._renderable(), console=self.console, refresh_per_second=4, transient=False,
                              get_renderable=self._renderable)
            self._live.start()
        self._thread = threading.Thread(target=self._loop, name="revati-startup", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    # ---- results

    def totals(self) -> dict[str, float]:
        """Wall seconds per phase (spells added up, replicas together), in phase order."""
        out: dict[str, float] = {}
        now = time.monotonic()
        with self._lock:
            spells = list(self.spells)
        for key, _ in PHASES:
            t = sum(((s.end or now) - s.start) for s in spells if s.phase == key)
            if any(s.phase == key for s in spells):
                out[key] = round(t, 2)
        return out

    def phases(self) -> dict:
        """The report's block: each spell (phase, replica, start and end in s after the run's
        start) and the totals; t0_monotonic lets a sampler of this run line its samples up."""
        with self._lock:
            spells = list(self.spells)
        load = [s for s in spells if s.phase == "load"]
        end = load[0].start if load else (spells[-1].end or time.monotonic())
        return {
            "t0_monotonic": self.t0,
            "startup_wall_s": round(end - self.t0, 2),  # to the load's first request
            "phases_s": self.totals(),
            "spells": [{"phase": s.phase, "replica": s.replica, "start_s": round(s.start - self.t0, 2),
                        "end_s": round(s.end - self.t0, 2) if s.end is not None else None} for s in spells],
            "how": "wall time between the signals each phase starts at (runner steps, engine log lines, the "
                   "engine core's process), seen every 0.2 s",
            **({"notes": self.notes} if self.notes else {}),
        }

    # ---- the watcher

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._read_log()
                self._look_for_engine_core()
            except Exception as e:  # the display must never break a run
                self.notes.append(f"start-up watcher stopped: {e!r}")
                return

    def _read_log(self) -> None:
        w = self._watched
        if w is None:
            return
        path, replica = w
        try:
            with open(path, "rb") as f:
                f.seek(self._pos)
                chunk = f.read()
        except FileNotFoundError:
            return
        if not chunk:
            return
        self._pos += len(chunk)
        text = self._partial + chunk.decode(errors="replace")
        *lines, self._partial = re.split(r"[\r\n]", text)
        for line in lines:
            for pattern, phase in self._markers:
                if pattern.search(line):
                    self.enter(phase, replica, source=w)
                    break

    def _look_for_engine_core(self) -> None:
        """The engine core is a child the API server spawns (multiprocessing), titled by the
        engine once its imports are done: the first such child marks the engine_core phase."""
        w = self._watched
        if w is None or self.spells[-1].phase not in ("engine_start", "model_config"):
            return
        for child in set(_children(os.getpid())) - self._known:
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            cmd = b" ".join(argv).decode(errors="replace")
            title = argv[0].decode(errors="replace").strip()
            kind = self.engine.process_kind(title) if self.engine is not None else None
            if kind in ("engine", "worker") or ("multiprocessing.spawn" in cmd and "resource_tracker" not in cmd):
                self.enter("engine_core", w[1], source=w)
                return

    # ---- display

    def _print_spell(self, s: _Spell) -> None:
        who = f"replica {s.replica}: " if s.replica is not None else ""
        end = s.end if s.end is not None else time.monotonic()
        self.console.print(f"revati run: [{end - self.t0:6.1f} s] {who}{LABELS.get(s.phase, s.phase)} "
                           f"{end - s.start:.1f} s", highlight=False, markup=False, soft_wrap=True)

    def _renderable(self):
        from rich.spinner import Spinner
        from rich.table import Table

        now = time.monotonic()
        with self._lock:
            spells = list(self.spells)
        cur = spells[-1] if spells and spells[-1].end is None else None
        table = Table.grid(padding=(0, 2))
        table.add_column(width=2)
        table.add_column()
        table.add_column(justify="right")
        seen = []
        for s in spells:
            key = (s.phase, s.replica)
            if key not in seen:
                seen.append(key)
        for phase, replica in seen:
            t = sum(((s.end or now) - s.start) for s in spells if (s.phase, s.replica) == (phase, replica))
            who = f"replica {replica}: " if replica is not None else ""
            active = cur is not None and (cur.phase, cur.replica) == (phase, replica)
            table.add_row(Spinner("dots") if active else "[green]✓[/]", f"{who}{LABELS.get(phase, phase)}",
                          f"{t:5.1f} s")
        table.add_row("", f"[bold]start-up, elapsed", f"[bold]{now - self.t0:5.1f} s")
        return table


def _children(pid: int) -> list[int]:
    """The live descendants of pid."""
    return descendants(pid)
