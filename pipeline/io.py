"""Every location the job touches is a URL (``s3://bucket/key``, ``/local/path``,
``file:///local/path``), and this module is the one place that turns a URL into
bytes: it resolves fsspec filesystems (s3fs for S3) from the standard AWS
variables, ``AWS_ENDPOINT_URL`` included, plus the user's ``--storage-options``,
writes whole objects atomically, and turns storage exceptions into messages
that say what to do. It must never print or return a credential, and never
import TensorFlow or Ray.
"""

from __future__ import annotations

import errno
import os
import posixpath
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import fsspec
import pyarrow.fs as pafs
from fsspec.core import url_to_fs

# fsspec options whose values are credentials; they are never echoed back.
SECRET_OPTION_WORDS = ("secret", "token", "password", "key", "credential", "session")

# How long a write (and any other retried storage call) keeps retrying a
# transient error before the run gives up on it (exit 1, rerun to resume).
RETRY_SECONDS: float = 120.0

# Messages of errors that pass by themselves: an endpoint restarting, a
# connection cut by a proxy or load balancer, throttling. botocore retries
# these a few times (~5-10 s); an outage longer than that reaches us. Matched
# case-insensitively against the exception's type name and message; Ray Data's
# reader takes the same list (DataContext.retried_io_errors) for its reads.
TRANSIENT_ERRORS = (
    "Could not connect to the endpoint URL",
    "Connection was closed before we received a valid response",
    "Connection reset by peer",
    "Connection refused",
    "Server disconnected",
    "Read timeout on endpoint URL",
    "Connect timeout on endpoint URL",
    "Broken pipe",
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
)
_TRANSIENT_TYPES = (
    "EndpointConnectionError",
    "ConnectionClosedError",
    "ReadTimeoutError",
    "ConnectTimeoutError",
    "ServerDisconnectedError",
    "ClientConnectorError",
    "ClientOSError",
    "FSTimeoutError",
    "ConnectionResetError",
    "ConnectionRefusedError",
    "BrokenPipeError",
)

T = TypeVar("T")


class StorageError(RuntimeError):
    """A storage problem explained for a person: what failed and what to do."""


class StorageUnavailable(StorageError):
    """Storage that throttles or fails for now (503 SlowDown, 5xx): the same
    command may succeed later (exit 1, where other storage errors exit 3)."""


def is_remote(url: str) -> bool:
    """True for URLs with a scheme other than ``file``/``local``."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    return scheme not in ("", "file", "local")


def join(url: str, *parts: str) -> str:
    """Join path parts onto a URL with ``/``, whatever the scheme."""
    out = url.rstrip("/")
    for part in parts:
        out = posixpath.join(out, part.strip("/"))
    return out


def location(url: str) -> str:
    """A URL in one form for comparing locations: ``scheme://path`` without a
    trailing slash; local paths made absolute and normalised (``file://`` and
    ``local://`` are local paths)."""
    scheme, _, rest = url.partition("://") if "://" in url else ("", "", url)
    if scheme in ("", "file", "local"):
        return "file://" + os.path.normpath(os.path.abspath(rest or "."))
    if scheme == "s3a":
        scheme = "s3"
    return f"{scheme}://{posixpath.normpath(rest).rstrip('/')}"


def canonical_url(url: str) -> str:
    """The one spelling of a file or folder URL that identifies it: local paths
    (``file://`` and ``local://`` too) made absolute and resolved through
    symlinks, ``.``/``..`` and repeated slashes, no trailing slash; ``s3a://``
    and ``s3n://`` as ``s3://``, with the key's path normalised the same way
    (S3 keys are not resolved further: ``a//b`` is collapsed because every
    store and fsspec treat it as ``a/b``). Chained URLs (``a::b``) are left as
    given."""
    if "::" in url:
        return url
    scheme, _, rest = url.partition("://") if "://" in url else ("", "", url)
    if scheme in ("", "file", "local"):
        return os.path.realpath(os.path.abspath(rest or "."))
    if scheme in ("s3a", "s3n"):
        scheme = "s3"
    path = posixpath.normpath("/" + rest).lstrip("/")
    return f"{scheme}://{path}" if path != "." else f"{scheme}://"


def overlap_problems(input_url: str, output_url: str) -> list[str]:
    """Why an output cannot go where it was asked: empty, a filesystem root, a
    bucket's root, or equal to, inside or around the input (a rerun would read
    its own manifests as input, or write among the input's files)."""
    if not output_url.strip():
        return ["--output is empty: give a folder for the results"]
    out = location(output_url)
    path = out.split("://", 1)[1]
    if path in ("/", "") or (not out.startswith("file://") and "/" not in path):
        return [
            f"--output {output_url} is the root of a filesystem or bucket: "
            "give a folder of its own, e.g. s3://bucket/grids/run-1"
        ]
    if not input_url:
        return []
    inp = location(input_url)
    if out == inp:
        return [f"--output {output_url} is the input: write the results to a folder of their own"]
    if out.startswith(inp + "/"):
        return [
            f"--output {output_url} is inside the input {input_url}: a rerun would read the "
            "results as input. Write them outside the input folder"
        ]
    if inp.startswith(out + "/"):
        return [
            f"--output {output_url} contains the input {input_url}: the results would be "
            "written among the input files. Write them to a folder of their own"
        ]
    return []


def storage_options(url: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """fsspec options for ``url``: S3 settings from the standard AWS variables,
    overridden by ``extra`` (``--storage-options``).

    s3fs already reads the credential variables through botocore; the endpoint
    and region are set explicitly so that every process resolves the same
    endpoint whatever its botocore version.
    """
    options: dict[str, Any] = {}
    if url.startswith(("s3://", "s3a://")):
        # s3fs remembers folder listings, and answers "no such file" from a
        # listing taken before another process wrote the file (a _SUCCESS, a
        # manifest). The job shares its output with other processes: always ask.
        options["use_listings_cache"] = False
        client_kwargs: dict[str, Any] = {}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            client_kwargs["endpoint_url"] = endpoint
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            client_kwargs["region_name"] = region
        if client_kwargs:
            options["client_kwargs"] = client_kwargs
    for key, value in (extra or {}).items():
        if key == "client_kwargs" and isinstance(value, Mapping):
            options["client_kwargs"] = {**options.get("client_kwargs", {}), **value}
        else:
            options[key] = value
    return options


def redact(options: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a mapping (fsspec options, a job's arguments), nested ones
    included, with every value under a credential-like key replaced."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, Mapping):
            out[key] = redact(value)
        elif any(word in key.lower() for word in SECRET_OPTION_WORDS):
            out[key] = "***"
        else:
            out[key] = value
    return out


def is_transient(exc: BaseException) -> bool:
    """Whether a storage error may pass by itself (worth retrying)."""
    for cls in type(exc).__mro__:
        if cls.__name__ in _TRANSIENT_TYPES:
            return True
    text = str(exc).lower()
    return any(pattern.lower() in text for pattern in TRANSIENT_ERRORS)


def retrying(call: Callable[[], T], seconds: float = RETRY_SECONDS) -> T:
    """``call()``, retried with jittered exponential backoff while it fails with
    a transient error, for at most ``seconds``; other errors raise at once.

    Every caller's operation must be idempotent: whole-object writes under a
    content-derived name are, so a retried write is the same write.
    """
    deadline = time.monotonic() + seconds
    delay = 0.5
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 10.0)


def filesystem(
    url: str, options: Mapping[str, Any] | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``url`` and the path inside it.

    Instances are not cached across calls with different credentials: fsspec's
    instance cache is keyed on the options, which is what we want.
    """
    return url_to_fs(url, **storage_options(url, options))


def arrow_filesystem(url: str, options: Mapping[str, Any] | None = None) -> pafs.FileSystem:
    """A pyarrow filesystem over fsspec, for readers that need one (Ray Data).

    pyarrow's own S3 filesystem ignores ``AWS_ENDPOINT_URL``; wrapping s3fs keeps
    one source of truth for endpoints and credentials.
    """
    fs, _ = filesystem(url, options)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def read_bytes(url: str, options: Mapping[str, Any] | None = None) -> bytes:
    fs, path = filesystem(url, options)
    return fs.cat_file(path)


def write_bytes(url: str, data: bytes, options: Mapping[str, Any] | None = None) -> None:
    """Write a whole object so that readers see all of it or none of it.

    An S3 PUT is atomic by itself; a local file is written to a temporary name in
    the same directory, flushed to disk, and renamed into place. The file gets
    the mode a plain ``open()`` gives (0o666 less the umask: 0644 under umask
    022), so other accounts on a shared mount can read what the job wrote
    (``tempfile.mkstemp`` would make every file 0600).
    """
    fs, path = filesystem(url, options)
    if is_remote(url):
        fs.pipe_file(path, data)
        return
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def exists(url: str, options: Mapping[str, Any] | None = None) -> bool:
    fs, path = filesystem(url, options)
    return fs.exists(path)


def remove(url: str, options: Mapping[str, Any] | None = None) -> None:
    """Delete one object if it exists."""
    fs, path = filesystem(url, options)
    if fs.exists(path):
        fs.rm_file(path)


def list_files(url: str, suffix: str = "", options: Mapping[str, Any] | None = None) -> list[str]:
    """URLs of the files directly under ``url`` whose names end in ``suffix``,
    sorted; an empty list when the folder does not exist."""
    fs, path = filesystem(url, options)
    try:
        entries = fs.ls(path, detail=True, refresh=True) if is_remote(url) else fs.ls(path, True)
    except FileNotFoundError:
        return []
    names = sorted(
        posixpath.basename(e["name"].rstrip("/"))
        for e in entries
        if e.get("type") == "file" and e["name"].endswith(suffix)
    )
    return [join(url, name) for name in names if not name.startswith(".")]


def list_names(url: str, options: Mapping[str, Any] | None = None) -> list[str]:
    """Names of the files and folders directly under ``url`` (none if it does
    not exist), sorted."""
    fs, path = filesystem(url, options)
    try:
        entries = fs.ls(path, detail=False, refresh=True) if is_remote(url) else fs.ls(path, False)
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(e.rstrip("/")) for e in entries)


def find_files(url: str, suffix: str, options: Mapping[str, Any] | None = None) -> list[str]:
    """URLs of all files under ``url`` (recursively) ending in ``suffix``, sorted.

    A URL that names a single file returns just that file.
    """
    fs, path = filesystem(url, options)
    if fs.isfile(path):
        return [url]
    found = fs.find(path)
    if not found and not fs.exists(path):
        raise FileNotFoundError(url)
    prefix = url.split("://", 1)[0] + "://" if "://" in url and is_remote(url) else ""
    return sorted(
        prefix + f
        for f in found
        if f.endswith(suffix) and not posixpath.basename(f).startswith(".")
    )


# What a Parquet file's name may end in, case-insensitively: pyarrow, Spark
# (``.snappy.parquet``) and Dask write ``.parquet``, Impala ``.parq``, some tools
# ``.pq``. A name without any suffix (Hive's ``000000_0``, Spark's Hive-format
# ``part-00000-<uuid>-c000``, Trino's) is read when its content is Parquet.
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
PARQUET_MAGIC = b"PAR1"  # a Parquet file's first and last four bytes


@dataclass(frozen=True)
class Listing:
    """The input files under a URL, and what was left out and why.

    Attributes:
        files: the files to read, by canonical URL (:func:`canonical_url`),
            sorted, each once however many links reach it.
        bare: those of ``files`` whose names have no suffix: Parquet only when
            their content says so (the ``PAR1`` magic), which their footer read
            shows (:func:`is_parquet` tells a file that is not Parquet from a
            damaged one).
        skipped: ``(url, why)`` for each file or folder left out, by URL.
        details: a store's listing entry of each file (size, ETag), by URL:
            with it a footer read is one GET instead of a HEAD and a GET
            (``pipeline.inputs.scan``); none on local disk.
    """

    files: list[str]
    bare: frozenset[str] = frozenset()
    skipped: list[tuple[str, str]] = field(default_factory=list)
    details: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def report(self, limit: int = 5) -> str:
        """How many files and folders were left out, and the first ``limit`` with why."""
        if not self.skipped:
            return ""
        lines = [f"{len(self.skipped)} file(s) or folder(s) under the input are not read:"]
        lines += [f"  {url}: {why}" for url, why in self.skipped[:limit]]
        if len(self.skipped) > limit:
            lines.append(
                f"  ... and {len(self.skipped) - limit} more (the run's record lists them)"
            )
        return "\n".join(lines)


def hidden(name: str) -> bool:
    """Whether a file or folder name is left out of an input: a name starting
    with ``.`` or ``_`` (Spark's ``_SUCCESS`` and ``_temporary``, Hive's
    ``.hive-staging``, Hadoop's ``.crc`` files, ``_metadata``), as Spark, Hive
    and pyarrow's dataset discovery leave them out; but a Hive partition folder
    (``_year=2020``) is read, as Spark reads it."""
    return name.startswith(".") or (name.startswith("_") and "=" not in name)


def _kind(name: str) -> str | None:
    """``"parquet"`` (a Parquet suffix), ``"bare"`` (no suffix) or None (another suffix)."""
    if name.lower().endswith(PARQUET_SUFFIXES):
        return "parquet"
    return "bare" if "." not in name else None


_NOT_PARQUET_NAME = (
    f"not a Parquet file name (Parquet: {', '.join(PARQUET_SUFFIXES)}, or no suffix)"
)


def _why_hidden(name: str, folder: bool) -> str:
    what = "a folder" if folder else "a file"
    return f"{what} whose name starts with {name[0]!r} (bookkeeping or hidden, never input)"


def list_input(url: str, options: Mapping[str, Any] | None = None) -> Listing:
    """The Parquet files under the input ``url``, found the way Spark, Hive and
    pyarrow find them: every file and folder below ``url`` whose name is
    :func:`hidden` is left out; a file is read when its name ends in one of
    ``PARQUET_SUFFIXES`` or has no suffix at all (``bare``); other files
    (``.json``, ``.csv``, ``README.md``) are left out. On local disk, symbolic
    links to folders are followed; a link back to a folder it is inside (a loop)
    or to a folder already walked is not walked again, and is listed. Whatever
    is left out is in ``skipped`` with why. A URL that names a single file is
    that file, whatever its name.

    Raises:
        FileNotFoundError: nothing exists at ``url``.
    """
    fs, path = filesystem(url, options)
    if fs.isfile(path):
        return Listing([canonical_url(url)])
    entries: dict[str, dict[str, Any]] = {}
    if is_remote(url):
        found, skipped, entries = _list_flat(fs, path, url)
    else:
        found, skipped = _walk_local(path)
    files: dict[str, str] = {}  # canonical URL -> the path it was found under
    bare = set()
    for where in found:
        name = posixpath.basename(where)
        kind = _kind(name)
        if kind is None:
            skipped.append((where, _NOT_PARQUET_NAME))
            continue
        canonical = canonical_url(where)
        if canonical in files:
            skipped.append((where, f"the same file as {files[canonical]} (read once)"))
            continue
        files[canonical] = where
        if kind == "bare":
            bare.add(canonical)
    details = {
        url: _listed_entry(entries[where]) for url, where in files.items() if where in entries
    }
    return Listing(sorted(files), frozenset(bare), sorted(skipped), details)


def _listed_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What a footer read uses of a listing entry (the rest of it is not kept:
    a catalog lists 10^5 files)."""
    return {k: entry[k] for k in ("name", "size", "type", "ETag", "LastModified") if k in entry}


def _list_flat(fs: fsspec.AbstractFileSystem, path: str, url: str):
    """A store's keys under ``path`` (one flat listing), less the hidden ones;
    a hidden folder is listed once, not each key below it."""
    scheme = url.split("://", 1)[0]
    found = fs.find(path, detail=True)
    if not found and not fs.exists(path):
        raise FileNotFoundError(url)
    root = path.rstrip("/")
    files, skipped, folders, entries = [], [], set(), {}
    for key in sorted(found):
        if found[key].get("type") == "directory":
            continue
        parts = key[len(root) :].strip("/").split("/")
        at = next((i for i, part in enumerate(parts) if hidden(part)), None)
        if at is None:
            files.append(f"{scheme}://{key}")
            entries[files[-1]] = found[key]
        elif at == len(parts) - 1:
            skipped.append((f"{scheme}://{key}", _why_hidden(parts[at], folder=False)))
        else:
            folder = f"{scheme}://{root}/" + "/".join(parts[: at + 1])
            if folder not in folders:
                folders.add(folder)
                skipped.append((folder, _why_hidden(parts[at], folder=True)))
    return files, skipped, entries


def _walk_local(root: str):
    """Files under a local folder, following symbolic links to folders; a
    folder already walked (a loop back to one it is inside, or a second link
    to the same folder) is listed in ``skipped`` instead of walked again."""
    real_root = os.path.realpath(root)
    if not os.path.isdir(real_root):
        raise FileNotFoundError(errno.ENOENT, "no such folder", root)
    files, skipped = [], []
    walked = {real_root: root}  # real folder -> the path it was walked under
    todo = [(root, (real_root,))]  # a folder and the real folders it is inside
    while todo:
        folder, inside = todo.pop()
        with os.scandir(folder) as entries:
            entries = sorted(entries, key=lambda e: e.name)
        for entry in entries:
            where = entry.path
            if hidden(entry.name):
                skipped.append((where, _why_hidden(entry.name, entry.is_dir())))
            elif entry.is_dir():  # through a link too
                real = os.path.realpath(where)
                if real in inside:
                    skipped.append((where, f"a symbolic link loop (back to {real})"))
                elif real in walked:
                    skipped.append((where, f"the same folder as {walked[real]} (read once)"))
                else:
                    walked[real] = where
                    todo.append((where, (*inside, real)))
            elif entry.is_file():
                files.append(where)
            elif entry.is_symlink():
                skipped.append((where, "a broken symbolic link"))
            else:
                skipped.append((where, "not a regular file"))
    return sorted(files), skipped


def is_parquet(url: str, options: Mapping[str, Any] | None = None) -> bool:
    """Whether the file starts with the Parquet magic (``PAR1``): tells a file
    that is not Parquet at all from a damaged Parquet file (both fail a footer read)."""
    fs, path = filesystem(url, options)
    return fs.cat_file(path, start=0, end=len(PARQUET_MAGIC)) == PARQUET_MAGIC


def explain(
    exc: BaseException, url: str, role: str, options: Mapping[str, Any] | None = None
) -> StorageError:
    """Turn a storage exception into a message that says what to do.

    ``role`` names what the URL is for (``input``, ``output``, ``model``). The
    message names the URL, the endpoint and the exception type, never a credential.
    """
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if any(w in lowered for w in ("nocredentials", "unable to locate credentials")):
        hint = (
            "no S3 credentials were found. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE) where the job runs, or pass --storage-options "
            '\'{"key": ..., "secret": ...}\''
        )
    elif any(
        w in lowered
        for w in (
            "could not connect",
            "connect call failed",
            "cannot connect",
            "connection refused",
            "endpointconnectionerror",
            "name or service not known",
            "connecttimeout",
        )
    ):
        endpoint = (
            storage_options(url, options).get("client_kwargs", {}).get("endpoint_url")
            or "the default AWS endpoint"
        )
        hint = (
            f"the storage endpoint ({endpoint}) is unreachable. Check AWS_ENDPOINT_URL or "
            '--storage-options \'{"client_kwargs": {"endpoint_url": ...}}\' and that '
            "the cluster's nodes can reach it"
        )
    elif _denied(exc) and not is_remote(url) and isinstance(exc, OSError):
        hint = f"access was denied ({_os_error(exc)}). Choose a {role} this account may use"
    elif _denied(exc):
        hint = "access was denied. Check that the credentials may read/write this location"
    elif is_transient(exc):
        return StorageUnavailable(
            f"cannot use {role} {url} for now: the storage service failed or throttled "
            f"({type(exc).__name__}: {str(exc)[:200]}). Rerun the same command later."
        )
    elif not is_remote(url) and isinstance(exc, OSError) and exc.errno not in (None, errno.ENOENT):
        hint = f"the filesystem refused it ({_os_error(exc)}). Choose another {role} location"
    elif not is_remote(url) and isinstance(exc, FileNotFoundError) and role == "output":
        hint = (
            f"it cannot be created ({_os_error(exc)}): the folder above it is missing or not "
            "a place for files (e.g. under /proc). Choose a writable folder"
        )
    elif isinstance(exc, FileNotFoundError) or "nosuchbucket" in lowered:
        hint = f"it does not exist. Check the {role} URL" + (
            " (and the bucket name)" if is_remote(url) else ""
        )
    else:
        hint = f"unexpected storage error ({type(exc).__name__}: {str(exc)[:200]})"
    return StorageError(f"cannot use {role} {url}: {hint}.")


def _os_error(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or type(exc).__name__}{where}"


def _denied(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return (
        isinstance(exc, PermissionError)
        or "accessdenied" in text
        or "access denied" in text
        or "forbidden" in text
        or "permission denied" in text
        or "operation not permitted" in text
    )


# Local write errors no rerun gets past: a read-only filesystem, a full disk,
# a path that is a file where a folder must be.
_PERMANENT_ERRNOS = (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR)


def permanent_cause(exc: BaseException) -> str | None:
    """What, in a failure raised through Ray (a task's error wraps the
    storage error, as its cause or only in its text), no rerun of the same
    command gets past: access denied, a read-only or full filesystem. None
    for anything else (a rerun may resume)."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        error = stack.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _PERMANENT_ERRNOS:
            return f"storage refused a write ({_os_error(error)})"
        if _denied(error):
            text = str(error).strip().splitlines()
            last = text[-1][:300] if text else type(error).__name__
            return (
                f"access was denied ({type(error).__name__}: {last}); check that the "
                "credentials may write the output"
            )
        stack += [
            e
            for e in (getattr(error, "cause", None), error.__cause__, error.__context__)
            if isinstance(e, BaseException)
        ]
    return None
