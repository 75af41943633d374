"""One driver per output, fenced: a lease (``OUTPUT/_LEASE``, JSON) that the
running job's driver keeps fresh, and a generation number (a claim file
``OUTPUT/leases/<generation>.json``) that every commit carries.

A driver takes the lease by claiming the next generation with a conditional
create (``O_EXCL``-style ``link`` on local disk, ``If-None-Match: *`` on S3):
of two drivers that claim the same number, the store lets one win. Stores
without a conditional create fall back to write, wait, read back. The newest
claim is the only writer: a driver that sees a newer claim than its own has
lost the output and must stop at once (``LeaseLost`` in its main thread), and
its write tasks refuse to commit (``check_fence``), so a paused, partitioned
or zombie writer cannot add rows after a takeover; readers settle what slipped
through by generation (``pipeline.index``).

Whether the holder is alive is judged without comparing clocks across hosts:
on the same host by its process; from another host by watching ``_LEASE`` and
the claims for one time-to-live on the waiting driver's own clock (a lease
that changes is alive). A ``_LEASE`` that is not voxray's JSON is reported and
treated the same way, or taken at once with ``take=True`` (``--take-lease``).
This module must never remove a lease it does not hold, and never reuse a
generation number.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from pipeline import io
from pipeline.layout import LEASE, LEASES

# A lease that does not change for this long belongs to a dead driver. The
# VOXRAY_LEASE_* variables and VOXRAY_HOST (this host's name in leases: set it
# where containers share a hostname) also let tests stage other hosts.
TTL_SECONDS = float(os.environ.get("VOXRAY_LEASE_TTL", "30"))
RENEW_SECONDS = float(os.environ.get("VOXRAY_LEASE_RENEW", "5"))
SETTLE_SECONDS = 1.0  # stores without a conditional create: between writing a claim and reading it
MAX_TTL_SECONDS = 600.0  # a lease claiming a longer time-to-live is waited out for this long


class LeaseHeld(RuntimeError):
    """Another live driver holds the output."""


class StaleGeneration(RuntimeError):
    """A commit from a generation older than the output's newest claim: refused."""


class LeaseLost(BaseException):
    """Raised in the driver's main thread when a newer generation took the
    output: a ``BaseException`` (as ``KeyboardInterrupt``) so that no library's
    ``except Exception`` swallows it while the driver must stop."""


def _process_started(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def claim_url(output: str, generation: int) -> str:
    return io.join(output, LEASES, f"{generation:012d}.json")


def current_generation(output: str, storage_options: Mapping[str, Any] | None = None) -> int:
    """The newest generation claimed on ``output`` (0 when none): one listing."""
    numbers = [
        int(stem)
        for url in io.list_files(io.join(output, LEASES), ".json", storage_options)
        if (stem := url.rsplit("/", 1)[-1][: -len(".json")]).isdigit()
    ]
    return max(numbers, default=0)


def check_fence(
    output: str, storage_options: Mapping[str, Any] | None, generation: int | None
) -> None:
    """Refuse to commit for ``generation`` once a newer one claimed the output.

    Raises:
        StaleGeneration: naming both generations.
    """
    if generation is None:
        return
    newest = current_generation(output, storage_options)
    if newest > generation:
        raise StaleGeneration(
            f"output {output} was taken over by generation {newest}; this writer "
            f"(generation {generation}) may no longer commit"
        )


def create_exclusive(url: str, data: bytes, options: Mapping[str, Any] | None = None) -> bool:
    """Create ``url`` holding ``data`` only if nothing is there; False if
    something was. Local disk links a finished temporary file into place
    (atomic, fails when the name exists); S3 sends ``If-None-Match: *``; other
    stores write, wait and read back (the last writer wins the read)."""
    fs, path = io.filesystem(url, options)
    if not io.is_remote(url):
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".{uuid.uuid4().hex}.tmp")
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
    if url.startswith(("s3://", "s3a://")):
        try:
            fs.pipe_file(path, data, mode="create")
            return True
        except FileExistsError:
            return False
    if fs.exists(path):
        return False
    fs.pipe_file(path, data)
    time.sleep(SETTLE_SECONDS)
    return fs.cat_file(path) == data


class Lease:
    """The lease on ``output`` for this process.

    Args:
        output: the output URL.
        storage_options: fsspec options for it.
        ttl: seconds without a change after which a lease is stale.
        say: where the lease reports what it did (a takeover, a wait).
        take: take the output at once from a holder that cannot be judged
            alive here (another host's, or an unreadable ``_LEASE``), without
            waiting one time-to-live (``--take-lease``); a live holder on this
            host is still refused.
        on_lost: called (in the renewing thread) when a newer generation took
            the output; by default ``LeaseLost`` is raised in the main thread.
    """

    def __init__(
        self,
        output: str,
        storage_options: Mapping[str, Any] | None = None,
        ttl: float = TTL_SECONDS,
        say: Callable[[str], None] = print,
        take: bool = False,
        on_lost: Callable[[str], None] | None = None,
    ):
        self.url = io.join(output, LEASE)
        self.output = output
        self.options = dict(storage_options or {})
        self.ttl = ttl
        self.say = say
        self.take = take
        self.on_lost = on_lost or _raise_in_main_thread
        self.holder = uuid.uuid4().hex
        self.host = os.environ.get("VOXRAY_HOST") or socket.gethostname()
        self.started = time.time()
        self.generation = 0
        self.lost: str | None = None  # why, once a newer generation took the output
        self._beat = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- reading ------------------------------------------------------------------------

    def _raw(self, url: str) -> bytes | None:
        try:
            return io.read_bytes(url, self.options)
        except FileNotFoundError:
            return None

    def read(self) -> dict[str, Any] | None:
        """The lease as JSON; ``{"unreadable": why}`` for content that is not a
        voxray lease; None when there is none."""
        return _parse(self._raw(self.url))

    def _body(self, **extra: Any) -> bytes:
        return json.dumps(
            {
                "holder": self.holder,
                "host": self.host,
                "pid": os.getpid(),
                "process_started": _process_started(os.getpid()),
                "started": self.started,
                "renewed": time.time(),  # for people; never compared across hosts
                "beat": self._beat,
                "ttl": self.ttl,
                "generation": self.generation,
                **extra,
            }
        ).encode()

    def _write(self) -> None:
        self._beat += 1
        io.write_bytes(self.url, self._body(), self.options)

    def _alive_here(self, lease: dict[str, Any]) -> bool:
        """Whether the lease's holder is a live process on this host."""
        started = _process_started(int(lease.get("pid", -1)))
        return started is not None and abs(started - lease.get("process_started", 0)) < 1.0

    def _describe(self, lease: dict[str, Any]) -> str:
        if "unreadable" in lease:
            return f"an unreadable {LEASE} ({lease['unreadable']})"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lease.get("started", 0)))
        return (
            f"pid {lease.get('pid')} on {lease.get('host')}, running since {since}, "
            f"generation {lease.get('generation', 0)}"
        )

    # --- taking -------------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the lease (waiting out a stale one), claim the next generation,
        and keep the lease fresh.

        Raises:
            LeaseHeld: a live driver holds the output, or another claimed the
                same generation first.
        """
        # Claim the generation after the one that was judged: a driver that
        # claimed in between (after this one looked) makes the claim fail.
        self.generation = self._wait_for_holder() + 1
        if not create_exclusive(
            claim_url(self.output, self.generation), self._body(), self.options
        ):
            raise LeaseHeld(
                f"output {self.output} was taken by another job that started at the same time "
                f"(it claimed generation {self.generation} first). Wait for it to finish, or use "
                "another --output."
            )
        self._write()
        self._thread = threading.Thread(target=self._renew, name="voxray-lease", daemon=True)
        self._thread.start()

    def _holder(self) -> tuple[dict[str, Any] | None, bytes | None, int]:
        """The lease to judge (``_LEASE``, else the newest claim not released),
        its raw bytes and the newest generation."""
        newest = current_generation(self.output, self.options)
        raw = self._raw(self.url)
        if raw is not None:
            return _parse(raw), raw, newest
        if newest:  # a _LEASE removed by hand: the newest claim says who held the output
            claim = _parse(self._raw(claim_url(self.output, newest)))
            if claim and not claim.get("released"):
                return claim, None, newest
        return None, None, newest

    def _wait_for_holder(self) -> int:
        """Return the newest generation once the output's holder is gone; raise
        if it lives."""
        lease, raw, newest = self._holder()
        if lease is None:
            return newest
        held = (
            f"output {self.output} is in use by another run of the job "
            f"({self._describe(lease)}). Wait for it to finish, or write to another --output."
        )
        unreadable = "unreadable" in lease
        if unreadable:
            self.say(
                f"lease: {self.url} is not a voxray lease ({lease['unreadable']}); it is treated "
                f"as a dead driver's if it does not change for {self.ttl:.0f} s "
                "(--take-lease takes the output at once)"
            )
        elif lease.get("host") == self.host:
            if self._alive_here(lease):
                raise LeaseHeld(held)
            self.say(
                f"lease: the last run on this output ({self._describe(lease)}) is gone; taking over"
            )
            return newest
        if self.take:
            self.say(f"lease: taking the output from {self._describe(lease)} (--take-lease)")
            return newest
        ttl = self.ttl
        if not unreadable:
            with contextlib.suppress(TypeError, ValueError):
                ttl = min(max(float(lease.get("ttl", self.ttl)), 0.0), MAX_TTL_SECONDS)
            self.say(
                f"lease: output held by {self._describe(lease)}; watching it for {ttl:.0f} s "
                "(this host's clock) to see whether it is still running"
            )
        # Judged by this host's monotonic clock alone: the holder's timestamps
        # come from its own clock, which may be minutes off ours.
        deadline = time.monotonic() + ttl
        while time.monotonic() < deadline:
            time.sleep(max(0.05, min(RENEW_SECONDS, ttl / 4, deadline - time.monotonic())))
            now_raw = self._raw(self.url)
            now_newest = current_generation(self.output, self.options)
            if now_newest != newest or (now_raw is not None and now_raw != raw):
                raise LeaseHeld(held)
        self.say(f"lease: it did not change for {ttl:.0f} s; taking over")
        return newest

    # --- holding ------------------------------------------------------------------------

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                newest = current_generation(self.output, self.options)
                if newest > self.generation:
                    lease = self.read() or {}
                    self._lose(
                        f"lease on {self.output} taken by generation {newest} "
                        f"({self._describe(lease)})"
                    )
                    return
                self._write()
            except Exception as exc:  # an outage: the writes retry; keep trying
                self.say(f"warning: could not renew the lease on {self.output}: {exc!r}"[:300])

    def _lose(self, why: str) -> None:
        self.lost = why
        self.on_lost(why)

    def check(self) -> None:
        """Raise if this driver no longer holds the output (before a write
        only the holder may make: an index part, ``_SUCCESS``).

        Raises:
            StaleGeneration: a newer generation took the output.
        """
        check_fence(self.output, self.options, self.generation)

    def release(self) -> None:
        """Stop renewing; if this process still holds the newest claim, mark it
        released and remove the lease."""
        self._stop.set()
        if self._thread is None:
            return
        self._thread.join()
        self._thread = None
        if self.lost or current_generation(self.output, self.options) != self.generation:
            return
        io.write_bytes(
            claim_url(self.output, self.generation), self._body(released=True), self.options
        )
        lease = self.read()
        if lease and lease.get("holder") == self.holder:
            io.remove(self.url, self.options)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _parse(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        lease = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {"unreadable": f"{type(exc).__name__}, {len(raw)} bytes"}
    if not isinstance(lease, dict) or "holder" not in lease:
        return {"unreadable": f"JSON without a holder, {len(raw)} bytes"}
    return lease


def _raise_in_main_thread(why: str) -> None:
    """Stop the driver where it stands: ``LeaseLost`` is raised in the main
    thread at its next Python instruction (Ray Data's executor polls, so within
    moments), and unwinding ends the run's Ray work as any error does."""
    main = threading.main_thread().ident
    if main is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(main), ctypes.py_object(LeaseLost)
        )
