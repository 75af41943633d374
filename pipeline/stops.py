"""Clean stops: SIGINT (Ctrl-C) and SIGTERM (``ray job stop``, a pod's
eviction) turned into one exception, :class:`Interrupted`, raised in the
driver's main thread, so that the job ends the way it ends on any failure:
Ray's work stopped, the run recorded (as interrupted), the lease released, one
line printed, and an exit code that names the signal (128 + its number: 130
for SIGINT, 143 for SIGTERM). Committed shards stay committed; a shard whose
manifest was not written is invisible and redone by the rerun.

``Interrupted`` derives from ``BaseException`` (as ``KeyboardInterrupt`` does)
so that no ``except Exception`` on its way, Ray Data's or the job's, takes a
stop for a failure. This module must never exit the process itself, and never
act on a signal outside the block it guards.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):  # noqa: N818 (a stop, not an error, as KeyboardInterrupt)
    """The driver was asked to stop by a signal.

    Args:
        signum: the signal's number.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.rows_committed: int | None = None  # this run's, when the job counted them

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def code(self) -> int:
        """The exit code a shell gives a process ended by this signal."""
        return 128 + self.signum

    def line(self) -> str:
        """The one line a stopped run prints."""
        rows = (
            "" if self.rows_committed is None else f" after {self.rows_committed:,} rows committed"
        )
        return f"interrupted ({self.name}){rows}; rerun the same command to resume"


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """While the block runs, the first SIGINT or SIGTERM raises
    :class:`Interrupted` in the main thread; later ones are ignored, so they
    cannot cut the clean-up short (SIGKILL still ends the process). The
    previous handlers are back after the block. Outside the main thread (where
    Python cannot install handlers) the block runs unguarded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        if stopping.is_set():
            return
        stopping.set()
        raise Interrupted(signum)

    previous = {s: signal.signal(s, stop) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """Keep this process's SIGINT and SIGTERM handlers across the block.

    ``ray.init`` replaces them: Ray sets a SIGTERM handler of its own (which
    exits) and its core worker installs a C++ failure handler that turns
    SIGTERM into a stack dump and an abort (exit 134), which would bypass
    :func:`handled`. A SIGTERM that Ray's own handler took during the block is
    handed to the process's handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    try:
        yield
    except SystemExit as exc:
        handler = previous[signal.SIGTERM]
        if exc.code == signal.SIGTERM and callable(handler):
            handler(signal.SIGTERM, None)
        raise
    finally:
        for s, handler in previous.items():
            if handler is not None:
                signal.signal(s, handler)
