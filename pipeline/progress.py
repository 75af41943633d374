"""What a running job is doing, for the people watching it and for the job
itself: a small Ray actor that the write tasks tell how many rows each commit
held, and the model actors tell their state through a :class:`Beat` (at most
one message per finished batch, rate-limited, plus a keep-alive while a long
batch runs); and a thread in the driver that prints rows committed of rows to
do, the rate and the time left every few seconds (on a terminal and in ``ray
job logs`` alike: plain lines, no redrawing), and replaces a stalled model
actor: one whose oldest batch has run longer than the stall timeout, or, when
no actor has finished a batch for that long, every actor not heard from for
that long. Ray restarts a killed actor and Ray Data retries its batch, as after
a crash. The stats actor also counts device failures per block, so that a block
that keeps failing on the device stops the job instead of looping. This module
must never slow a write or a model call down: a caller that cannot reach the
actor carries on, and a busy machine skips a progress line rather than failing.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from pipeline import background

PROGRESS_SECONDS = 5.0
# The least time between two messages of one model actor (its Beat).
BEAT_SECONDS = 0.5


class Stats:
    """The counters (run as a Ray actor by :func:`start`)."""

    def __init__(self) -> None:
        self.rows_ok = 0
        self.rows_failed = 0
        self.precisions: set[str] = set()
        self.messages = 0  # every call received, for the benchmark's load figure
        # actor id -> handle, where, heard (monotonic), and its last state
        self.actors: dict[str, dict[str, Any]] = {}
        self.retired: dict[str, float] = {}  # counters of actor processes since replaced
        self.last_batch = time.monotonic()  # when any actor last finished a batch
        self.device_failures: dict[str, list[str]] = {}  # block -> errors, oldest first

    def register(self, actor: str, handle: Any, where: str) -> None:
        self.messages += 1
        now = time.monotonic()
        old = self.actors.pop(actor, None)
        if old is not None:  # a restarted actor: keep what its last process did
            self._retire(old["state"])
        self.actors[actor] = {"handle": handle, "where": where, "heard": now, "state": {}}

    def beat(self, actor: str, state: dict[str, Any]) -> None:
        """An actor's state: ``inflight_age`` (s, oldest batch running, or None),
        and its process's cumulative ``calls``, ``rows``, ``cpu_s`` (CPU time
        since its first batch began), ``busy_s`` (waiting on the device) and
        ``active_s`` (first batch start to last end)."""
        self.messages += 1
        now = time.monotonic()
        entry = self.actors.get(actor)
        if entry is None:
            return
        if state.get("calls", 0) > entry["state"].get("calls", 0):
            self.last_batch = now
        entry["heard"], entry["state"] = now, state

    def device_failed(self, block: str, error: str) -> int:
        """Record a device failure of ``block``; how many it has had."""
        self.messages += 1
        self.device_failures.setdefault(block, []).append(error)
        return len(self.device_failures[block])

    def stalled(self, timeout: float) -> list[dict[str, Any]]:
        """The actors to replace (forgotten here: a restarted one registers again)."""
        now = time.monotonic()
        idle_pool = now - self.last_batch > timeout
        out = []
        for actor, entry in list(self.actors.items()):
            silent = now - entry["heard"]
            age = entry["state"].get("inflight_age")
            if age is not None and age + silent > timeout:
                reason = f"a batch has been running for {age + silent:.0f} s"
            elif idle_pool and silent > timeout:
                reason = f"no actor has finished a batch for {now - self.last_batch:.0f} s"
            else:
                continue
            out.append(
                {
                    "actor": actor,
                    "handle": entry["handle"],
                    "where": entry["where"],
                    "reason": reason,
                }
            )
            self._retire(entry["state"])
            del self.actors[actor]
        if out:
            self.last_batch = now  # give the restarted actors their time
        return out

    def _retire(self, state: dict[str, Any]) -> None:
        for key in ACTOR_COUNTERS:
            self.retired[key] = self.retired.get(key, 0.0) + float(state.get(key, 0.0))

    def committed(self, ok: int, failed: int) -> None:
        self.messages += 1
        self.rows_ok += ok
        self.rows_failed += failed

    def precision(self, name: str) -> None:
        self.messages += 1
        self.precisions.add(name)

    def usage(self) -> dict[str, float]:
        """Messages received and this actor's CPU seconds (the benchmark's load)."""
        return {"messages": self.messages, "cpu_s": time.process_time()}

    def snapshot(self) -> dict[str, Any]:
        return {
            "rows_ok": self.rows_ok,
            "rows_failed": self.rows_failed,
            "precisions": sorted(self.precisions),
            "messages": self.messages,
            "actors": actor_totals(
                [e["state"] for e in self.actors.values()], self.retired, len(self.actors)
            ),
            "device_failures": {k: len(v) for k, v in self.device_failures.items()},
        }


# An actor process's cumulative counters, as its Beat reports them.
ACTOR_COUNTERS = ("calls", "rows", "cpu_s", "busy_s", "active_s")


def actor_totals(states: list[dict[str, Any]], retired: dict[str, float], live: int) -> dict:
    """The model actors' counters summed (live and replaced processes), with the
    figures the job's report gives: host CPU per object, busy fraction."""
    total = {k: float(retired.get(k, 0.0)) for k in ACTOR_COUNTERS}
    for state in states:
        for key in ACTOR_COUNTERS:
            total[key] += float(state.get(key, 0.0))
    rows = total["rows"]
    return {
        "actors": live,
        "calls": int(total["calls"]),
        "rows": int(rows),
        "cpu_s": round(total["cpu_s"], 3),
        "busy_s": round(total["busy_s"], 3),
        "active_s": round(total["active_s"], 3),
        "host_us_per_object": round(total["cpu_s"] / rows * 1e6, 1) if rows else None,
        "busy_fraction": round(total["busy_s"] / total["active_s"], 4)
        if total["active_s"]
        else None,
    }


class Beat:
    """A model actor's side of the stats: counts its batches in the process and
    sends the stats actor its state from a background thread, at most once per
    ``BEAT_SECONDS`` and only after a batch ended (at once when the last
    message is older than that; a batch that starts is told with the next
    message), and while a batch runs at least every ``keepalive`` seconds, so
    the stall check sees its age. Messages per block stay at or below one
    however fast the device is; the last half second of a fast actor's work may
    never be told when Ray Data ends the pool (the rows are counted by the
    commits, not here).

    Args:
        stats: the job's stats actor (None: count, send nothing).
        actor: this actor's id (its key at the stats actor).
        busy: returns the seconds spent waiting on the device so far.
        keepalive: seconds between messages while a batch runs.
    """

    def __init__(self, stats: Any, actor: str, busy: Any, keepalive: float):
        self.stats, self.actor, self.busy = stats, actor, busy
        self.keepalive = keepalive
        self.calls = self.rows = 0
        self.inflight: dict[int, float] = {}
        self.first: float | None = None
        self.last_end: float | None = None
        self.ended = False  # a batch ended since the last message
        self.sent = time.monotonic()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.next_id = 0
        self.cpu_at_first = 0.0  # process CPU seconds when the first batch began
        if stats is not None:
            threading.Thread(target=self._loop, name="voxray-beat", daemon=True).start()

    def begin(self) -> int:
        now = time.monotonic()
        with self.lock:
            self.next_id += 1
            self.inflight[self.next_id] = now
            if self.first is None:
                self.first = now
                self.cpu_at_first = time.process_time()
            return self.next_id

    def end(self, call: int, rows: int) -> None:
        now = time.monotonic()
        with self.lock:
            self.inflight.pop(call, None)
            self.calls += 1
            self.rows += rows
            self.last_end = now
            self.ended = True
            quiet = now - self.sent >= BEAT_SECONDS
        if quiet:  # tell now: a slow batch's end is news, and the pool may be ending
            self.wake.set()

    def state(self) -> dict[str, Any]:
        now = time.monotonic()
        with self.lock:
            oldest = min(self.inflight.values(), default=None)
            end = now if self.inflight else self.last_end
            return {
                "inflight_age": None if oldest is None else now - oldest,
                "calls": self.calls,
                "rows": self.rows,
                "cpu_s": time.process_time() - self.cpu_at_first if self.first else 0.0,
                "busy_s": float(self.busy()),
                "active_s": (end - self.first) if self.first is not None and end else 0.0,
            }

    def _loop(self) -> None:
        while True:
            self.wake.wait(BEAT_SECONDS)
            self.wake.clear()
            now = time.monotonic()
            with self.lock:
                due = self.ended and now - self.sent >= BEAT_SECONDS
                due = due or (bool(self.inflight) and now - self.sent >= self.keepalive)
                if due:
                    self.ended = False
                    self.sent = now
            if due:
                tell(self.stats, "beat", self.actor, self.state())


def start() -> Any:
    """A fresh stats actor (no CPU reserved: it only counts)."""
    import ray

    return ray.remote(num_cpus=0, max_restarts=0)(Stats).remote()


def tell(stats: Any, method: str, *args: Any) -> None:
    """Call ``method`` on the stats actor without waiting; never raise."""
    if stats is not None:
        with contextlib.suppress(Exception):
            getattr(stats, method).remote(*args)


def snapshot(stats: Any, timeout: float = 10.0) -> dict[str, Any]:
    import ray

    return ray.get(stats.snapshot.remote(), timeout=timeout)


def line(done: int, todo: int, elapsed: float) -> str:
    """``progress: 1,024 / 10,000 rows (10.2%), 85.3 rows/s, about 1 min 45 s left``."""
    rate = done / elapsed if elapsed > 0 else 0.0
    share = f" ({done / todo:.1%})" if todo else ""
    text = f"progress: {done:,} / {todo:,} rows{share}, {rate:.1f} rows/s"
    if rate > 0 and done < todo:
        left = (todo - done) / rate
        minutes, seconds = divmod(int(left), 60)
        hours, minutes = divmod(minutes, 60)
        when = f"{hours} h {minutes} min" if hours else f"{minutes} min {seconds} s"
        text += f", about {when} left"
    return text


def replace_stalled(stats: Any, timeout: float) -> None:
    """Kill the actors that the stats actor finds stalled; Ray restarts them."""
    import ray

    try:
        found = ray.get(stats.stalled.remote(timeout), timeout=30)
    except ray.exceptions.GetTimeoutError:
        return  # a busy machine: check again next time
    for stalled in found:
        print(
            f"warning: model actor {stalled['actor'][:12]} ({stalled['where']}) looks stalled: "
            f"{stalled['reason']}, over --stall-timeout {timeout:g} s; replacing it",
            file=sys.stderr,
            flush=True,
        )
        with contextlib.suppress(Exception):
            ray.kill(stalled["handle"], no_restart=False)


@contextlib.contextmanager
def reporting(
    stats: Any, todo: int, stall_timeout: float | None = None, every: float = PROGRESS_SECONDS
) -> Iterator[None]:
    """Print a progress line every ``every`` seconds while the block runs, and
    replace stalled model actors (``stall_timeout`` None: never)."""
    started = time.monotonic()
    last = [-1]

    def report() -> None:
        try:
            now = snapshot(stats, timeout=every)
        except Exception:
            return  # a busy machine: skip this line, the next one catches up
        done = now["rows_ok"] + now["rows_failed"]
        if done != last[0]:
            print(line(done, todo, time.monotonic() - started), flush=True)
            last[0] = done

    with contextlib.ExitStack() as stack:
        stack.enter_context(background.every(every, report, "progress report"))
        if stall_timeout is not None:
            check = lambda: replace_stalled(stats, stall_timeout)  # noqa: E731
            stack.enter_context(background.every(every, check, "stall check"))
        yield
