"""What a running job has done, for the people watching it: a small Ray actor
that the write tasks tell how many rows each commit held and the model actors
tell which precision they run at, and a thread in the driver that prints rows
committed of rows to do, the rate and the time left every few seconds (on a
terminal and in ``ray job logs`` alike: plain lines, no redrawing). This module
must never slow a write down: a task that cannot reach the actor carries on.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any

PROGRESS_SECONDS = 5.0


class Stats:
    """The counters (run as a Ray actor by :func:`start`)."""

    def __init__(self) -> None:
        self.rows_ok = 0
        self.rows_failed = 0
        self.precisions: set[str] = set()

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


@contextlib.contextmanager
def reporting(stats: Any, todo: int, every: float = PROGRESS_SECONDS):
    """Print a progress line every ``every`` seconds while the block runs."""
    stop = threading.Event()
    started = time.monotonic()

    def loop() -> None:
        last = -1
        while not stop.wait(every):
            with contextlib.suppress(Exception):
                now = snapshot(stats)
                done = now["rows_ok"] + now["rows_failed"]
                if done != last:
                    print(line(done, todo, time.monotonic() - started), flush=True)
                    last = done
        sys.stdout.flush()

    thread = threading.Thread(target=loop, name="voxray-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
