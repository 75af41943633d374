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
import os
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


# A stop raised while the main thread runs code that swallows exceptions (an
# object's finalizer, a bare ``except:`` in a library) is lost: the signal is
# delivered again after this long, until the job takes the stop.
RESEND_SECONDS = 5.0


class Interrupted(BaseException):  # noqa: N818 (a stop, not an error, as KeyboardInterrupt)
    """The driver was asked to stop by a signal. Whoever catches it to clean
    up calls :meth:`taken` first, so that the signal is not delivered again.

    Args:
        signum: the signal's number.
        taken: set when the job has taken the stop (None: nothing to tell).
    """

    def __init__(self, signum: int, taken: threading.Event | None = None):
        super().__init__(signum)
        self.signum = signum
        self.rows_committed: int | None = None  # this run's, when the job counted them
        self._taken = taken

    def taken(self) -> None:
        """The job is stopping: later signals are ignored (its clean-up runs to the end)."""
        if self._taken is not None:
            self._taken.set()

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
    """While the block runs, SIGINT or SIGTERM raises :class:`Interrupted` in
    the main thread, again every ``RESEND_SECONDS`` until the job takes it
    (:meth:`Interrupted.taken`); from then on signals are ignored, so they
    cannot cut the clean-up short (SIGKILL still ends the process). The
    previous handlers are back after the block. Outside the main thread (where
    Python cannot install handlers) the block runs unguarded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    taken = threading.Event()
    first: list[int] = []

    def resend() -> None:
        while not taken.wait(RESEND_SECONDS):
            os.kill(os.getpid(), first[0])

    def stop(signum: int, frame: object) -> None:
        if taken.is_set():
            return
        if not first:
            first.append(signum)
            threading.Thread(target=resend, name="voxray-stop", daemon=True).start()
        raise Interrupted(first[0], taken)

    previous = {s: signal.signal(s, stop) for s in SIGNALS}
    try:
        yield
    finally:
        taken.set()
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
