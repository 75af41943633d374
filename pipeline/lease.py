"""One driver per output: a lease object (``OUTPUT/_LEASE``, JSON) that the
running job's driver writes before its first row and keeps fresh while it runs.

A second driver on the same output reads it and is refused while the holder
lives, so two runs never write the same rows twice. A holder that died leaves
a lease that no longer renews: on the same host the next driver sees that the
process is gone and takes over at once; from another host it watches the lease
for one time-to-live and takes over when it has not been renewed. Storage has
no compare-and-swap that every backend offers, so taking a lease is write, wait,
read back: of two drivers that start in the same instant, one reads the other's
lease and steps back. Writing the lease is also the job's first write, so an
output that cannot be written fails here, before Ray starts. This module must
never remove a lease it does not hold.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from pipeline import io
from pipeline.layout import LEASE

TTL_SECONDS = 30.0  # a lease not renewed for this long belongs to a dead driver
RENEW_SECONDS = 5.0
SETTLE_SECONDS = 1.0  # between writing a lease and reading it back


class LeaseHeld(RuntimeError):
    """Another live driver holds the output."""


def _process_started(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


class Lease:
    """The lease on ``output`` for this process.

    Args:
        output: the output URL.
        storage_options: fsspec options for it.
        ttl: seconds without renewal after which a lease is stale.
        say: where the lease reports what it did (a takeover, a wait).
    """

    def __init__(
        self,
        output: str,
        storage_options: Mapping[str, Any] | None = None,
        ttl: float = TTL_SECONDS,
        say: Callable[[str], None] = print,
    ):
        self.url = io.join(output, LEASE)
        self.output = output
        self.options = dict(storage_options or {})
        self.ttl = ttl
        self.say = say
        self.holder = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(io.read_bytes(self.url, self.options))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:
            return None  # a torn or foreign file: not a live lease

    def _write(self) -> None:
        body = {
            "holder": self.holder,
            "host": self.host,
            "pid": os.getpid(),
            "process_started": _process_started(os.getpid()),
            "started": self.started,
            "renewed": time.time(),
            "ttl": self.ttl,
        }
        io.write_bytes(self.url, json.dumps(body).encode(), self.options)

    def _alive_here(self, lease: dict[str, Any]) -> bool:
        """Whether the lease's holder is a live process on this host."""
        started = _process_started(int(lease.get("pid", -1)))
        return started is not None and abs(started - lease.get("process_started", 0)) < 1.0

    def _describe(self, lease: dict[str, Any]) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lease.get("started", 0)))
        return f"pid {lease.get('pid')} on {lease.get('host')}, running since {since}"

    def acquire(self) -> None:
        """Take the lease, waiting out a stale one, and keep it fresh.

        Raises:
            LeaseHeld: a live driver holds the output.
        """
        lease = self.read()
        if lease and lease.get("holder") != self.holder:
            self._wait_out(lease)
        self._write()
        time.sleep(SETTLE_SECONDS)
        lease = self.read()
        if not lease or lease.get("holder") != self.holder:
            raise LeaseHeld(
                f"output {self.output} was taken by another job that started at the same time "
                f"({self._describe(lease or {})}). Wait for it to finish, or use another --output."
            )
        self._thread = threading.Thread(target=self._renew, name="voxray-lease", daemon=True)
        self._thread.start()

    def _wait_out(self, lease: dict[str, Any]) -> None:
        """Return when ``lease`` belongs to a dead driver; raise if it lives."""
        held = (
            f"output {self.output} is in use by another run of the job "
            f"({self._describe(lease)}). Wait for it to finish, or write to another --output."
        )
        age = time.time() - float(lease.get("renewed", 0))
        if lease.get("host") == self.host:
            if self._alive_here(lease):
                raise LeaseHeld(held)
            self.say(
                f"lease: the last run on this output ({self._describe(lease)}) is gone; taking over"
            )
            return
        ttl = float(lease.get("ttl", self.ttl))
        if age > ttl:
            self.say(
                f"lease: the last run on this output ({self._describe(lease)}) stopped "
                f"renewing its lease {age:.0f} s ago; taking over"
            )
            return
        self.say(
            f"lease: output held by {self._describe(lease)}, renewed {age:.0f} s ago; "
            f"waiting up to {ttl - age:.0f} s to see whether it is still running"
        )
        renewed = lease.get("renewed")
        while time.time() - float(renewed) <= ttl:
            time.sleep(min(RENEW_SECONDS, ttl))
            now = self.read()
            if not now:
                return
            if now.get("holder") != lease.get("holder") or now.get("renewed") != renewed:
                raise LeaseHeld(held)
        self.say("lease: it was not renewed; taking over")

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                lease = self.read()
                if lease and lease.get("holder") != self.holder:
                    self.say(f"warning: lease on {self.output} taken by {self._describe(lease)}")
                    return
                self._write()
            except Exception as exc:  # an outage: the writes retry; keep trying
                self.say(f"warning: could not renew the lease on {self.output}: {exc!r}"[:300])

    def release(self) -> None:
        """Stop renewing and remove the lease if this process still holds it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            lease = self.read()
            if lease and lease.get("holder") == self.holder:
                io.remove(self.url, self.options)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
