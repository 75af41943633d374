"""What a running job is doing, for the people watching it and for the job
itself: a small Ray actor that the write tasks tell how many rows each commit
held, and the model actors tell their precision and when each batch starts and
ends; and a thread in the driver that prints rows committed of rows to do, the
rate and the time left every few seconds (on a terminal and in ``ray job logs``
alike: plain lines, no redrawing), and replaces a stalled model actor: one with
a batch running longer than the stall timeout, or, when no actor has finished
a batch for that long, every actor that has not. Ray restarts a killed actor
and Ray Data retries its batch, as after a crash. This module must never slow a
write down: a task that cannot reach the actor carries on.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

from pipeline import background

PROGRESS_SECONDS = 5.0


class Stats:
    """The counters (run as a Ray actor by :func:`start`)."""

    def __init__(self) -> None:
        self.rows_ok = 0
        self.rows_failed = 0
        self.precisions: set[str] = set()
        self.actors: dict[str, dict[str, Any]] = {}  # actor id -> handle, where, calls
        self.last_batch = time.monotonic()  # when any actor last finished a batch

    def register(self, actor: str, handle: Any, where: str) -> None:
        now = time.monotonic()
        self.actors[actor] = {"handle": handle, "where": where, "calls": {}, "done": now}

    def started(self, actor: str, call: str) -> None:
        if actor in self.actors:
            self.actors[actor]["calls"][call] = time.monotonic()

    def finished(self, actor: str, call: str) -> None:
        now = time.monotonic()
        self.last_batch = now
        if actor in self.actors:
            self.actors[actor]["calls"].pop(call, None)
            self.actors[actor]["done"] = now

    def stalled(self, timeout: float) -> list[dict[str, Any]]:
        """The actors to replace (forgotten here: a restarted one registers again)."""
        now = time.monotonic()
        idle_pool = now - self.last_batch > timeout
        out = []
        for actor, state in list(self.actors.items()):
            oldest = min(state["calls"].values(), default=None)
            if oldest is not None and now - oldest > timeout:
                reason = f"a batch has been running for {now - oldest:.0f} s"
            elif idle_pool and now - state["done"] > timeout:
                reason = f"no actor has finished a batch for {now - self.last_batch:.0f} s"
            else:
                continue
            out.append(
                {
                    "actor": actor,
                    "handle": state["handle"],
                    "where": state["where"],
                    "reason": reason,
                }
            )
            del self.actors[actor]
        if out:
            self.last_batch = now  # give the restarted actors their time
        return out

    def committed(self, ok: int, failed: int) -> None:
        self.rows_ok += ok
        self.rows_failed += failed

    def precision(self, name: str) -> None:
        self.precisions.add(name)

    def snapshot(self) -> dict[str, Any]:
        return {
            "rows_ok": self.rows_ok,
            "rows_failed": self.rows_failed,
            "precisions": sorted(self.precisions),
        }


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

    for stalled in ray.get(stats.stalled.remote(timeout), timeout=30):
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
        now = snapshot(stats)
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
