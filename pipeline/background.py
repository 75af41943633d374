"""A call repeated in a background thread of the driver while a block of code
runs (the job's writes): the index fold, the progress line and the stall
check. A failed call is reported and tried again next time; it never stops
the job. This module must never run a call after the block has ended.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def every(seconds: float, call: Callable[[], None], what: str) -> Iterator[None]:
    """Run ``call()`` every ``seconds`` while the block runs; ``what`` names it
    in the warning printed when it fails."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(seconds):
            try:
                call()
            except Exception as exc:
                print(f"warning: {what} failed: {exc!r}"[:300], file=sys.stderr, flush=True)

    thread = threading.Thread(target=loop, name=f"voxray-{what}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
