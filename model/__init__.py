"""The 3D-R2N2 network and its contracts.

TensorFlow-free, import freely: ``model.images`` (photo -> model input),
``model.voxels`` (the grid, its stored form, threshold and IoU), ``model.data``
(training and evaluation datasets). The names below (layers, presets,
save/load, the compiled Reconstructor) are loaded on first use, so
``import model`` or ``from model import voxels`` never imports TensorFlow; only
touching one of them does. This package must never import ``pipeline``,
``jobs`` or Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it (all but model.defaults import TensorFlow)
_LAZY = {
    "PRESETS": "model.network",
    "NetworkConfig": "model.network",
    "build": "model.network",
    "build_from_config": "model.network",
    "BATCH_SIZE": "model.defaults",
    "Reconstructor": "model.reconstructor",
    "with_precision": "model.reconstructor",
    "DEFAULT_WEIGHTS": "model.defaults",
    "load_default": "model.saving",
    "load_model": "model.saving",
    "model_id": "model.saving",
    "save_model": "model.saving",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
