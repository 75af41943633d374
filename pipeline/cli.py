"""Argument types the jobs' command lines share, so that a flag means the same
and fails the same way in every command: ``--storage-options`` and
``--actors``. Each raises ``argparse.ArgumentTypeError`` with what to type
instead. This module must never import TensorFlow or Ray.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


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
