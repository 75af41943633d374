"""What the jobs' command lines share, so that a flag means the same and fails
the same way in every command: the argument types ``--storage-options`` and
``--actors`` (each raises ``argparse.ArgumentTypeError`` with what to type
instead), and :func:`run`, which turns a command's expected failures into one
line and the exit code docs/job.md gives them. This module must never import
TensorFlow or Ray.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from collections.abc import Callable
from typing import Any

from pipeline import cluster, io, stops

# Exit codes every command shares (docs/job.md, "Exit codes").
EXIT_RUN, EXIT_SETUP = 1, 3
# Local errors no rerun gets past without a change: a missing or unreadable
# file named on the command line, a read-only or full filesystem.
_PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
_PERMANENT_ERRNOS = (errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def run(
    body: Callable[[], int],
    permanent: tuple[type[BaseException], ...] = (),
) -> int:
    """``body()``'s exit code, with its expected failures said in one line on
    stderr instead of a traceback: a stop by SIGINT/SIGTERM (130/143), Ray or
    storage unavailable for now (1: rerun), a setup or storage problem, a
    missing or unwritable file, or one of ``permanent`` (3). Anything else is a
    bug and keeps its traceback."""
    with stops.handled():
        try:
            return body()
        except stops.Interrupted as stop:
            stop.taken()
            print(stop.line(), file=sys.stderr)
            return stop.code
        except (cluster.RayUnavailable, io.StorageUnavailable) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_RUN
        except (cluster.SetupError, io.StorageError, *permanent) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_SETUP
        except OSError as exc:
            if isinstance(exc, _PERMANENT_OS_ERRORS) or exc.errno in _PERMANENT_ERRNOS:
                where = f": {exc.filename}" if exc.filename else ""
                print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
                return EXIT_SETUP
            if io.is_transient(exc):
                print(f"error: storage unavailable for now ({exc}); rerun", file=sys.stderr)
                return EXIT_RUN
            raise


def storage_options(text: str) -> dict[str, Any]:
    """``--storage-options JSON``: a JSON object of fsspec options."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--storage-options is not JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--storage-options must be a JSON object")
    return value


def actors(text: str) -> tuple[int, int]:
    """``--actors``: ``N`` -> (N, N); ``MIN,MAX`` -> an autoscaling pool."""
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--actors takes N or MIN,MAX, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or parts[0] < 1 or parts[1] < parts[0]:
        raise argparse.ArgumentTypeError(
            f"--actors takes N or MIN,MAX with 1 <= MIN <= MAX, got {text!r}"
        )
    return parts[0], parts[1]
