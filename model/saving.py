"""Save and load voxray models as `.keras` files at any fsspec URL.

Keras reads and writes local files only, so remote URLs (s3://...) go through
a temporary local copy. Loading always runs in Keras safe mode: a `.keras`
file from a catalog owner is data, and must never execute code on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import fsspec
import keras
import numpy as np

import model.layers  # noqa: F401  (registers the custom layers for deserialization)
from model.defaults import DEFAULT_WEIGHTS


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _local_path(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


def save_model(model: keras.Model, url: str, storage_options: dict | None = None) -> None:
    """Write `model` as a `.keras` file to a local path or fsspec URL."""
    if not str(url).endswith(".keras"):
        raise ValueError(f"model files must end in .keras, got {url!r}")
    url = str(url)
    if _is_local(url):
        path = _local_path(url)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a reader never sees half a model.
        tmp = f"{path}.tmp-{os.getpid()}.keras"
        model.save(tmp)
        os.replace(tmp, path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "model.keras")
        model.save(local)
        with fsspec.open(url, "wb", **(storage_options or {})) as dst, open(local, "rb") as src:
            dst.write(src.read())


def load_model(url: str | os.PathLike, storage_options: dict | None = None) -> keras.Model:
    """Read a `.keras` file from a local path or fsspec URL, in safe mode."""
    url = str(url)
    if _is_local(url):
        path = _local_path(url)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no model file at {url}")
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "model.keras")
        with fsspec.open(url, "rb", **(storage_options or {})) as src, open(local, "wb") as dst:
            dst.write(src.read())
        return keras.saving.load_model(local, compile=False, safe_mode=True)


def load_default() -> keras.Model:
    """The weights voxray ships (trained `compact-wide`)."""
    if not DEFAULT_WEIGHTS.exists():
        raise FileNotFoundError(
            f"voxray's default weights ({DEFAULT_WEIGHTS}) are not in this checkout; pass a "
            "model explicitly (a .keras file path or URL), or train one with jobs/train.py"
        )
    return load_model(DEFAULT_WEIGHTS)


def model_id(model: keras.Model) -> str:
    """A stable id of a model's architecture and weights: `<name>-<12 hex>`.

    Hashes the float32 weight values and the layer config, not the file, so
    the same weights saved twice (Keras stamps the save date) share an id.
    """
    digest = hashlib.sha256()
    # JSON, not repr: a loaded model holds lists where a built one held tuples.
    digest.update(json.dumps(model.get_config(), sort_keys=True, default=str).encode())
    for w in model.weights:
        digest.update(repr(tuple(w.shape)).encode())
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w), np.float32).tobytes())
    return f"{model.name}-{digest.hexdigest()[:12]}"
