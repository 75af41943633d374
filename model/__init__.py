"""The 3D-R2N2 network: layers, presets, save/load, and the compiled Reconstructor.

Importing this package imports TensorFlow; pipeline code that must stay light
imports it only inside model actors.
"""

from model.network import PRESETS, NetworkConfig, build, build_from_config
from model.reconstructor import Reconstructor, with_precision
from model.saving import DEFAULT_WEIGHTS, load_default, load_model, model_id, save_model

__all__ = [
    "DEFAULT_WEIGHTS",
    "PRESETS",
    "NetworkConfig",
    "Reconstructor",
    "build",
    "build_from_config",
    "load_default",
    "load_model",
    "model_id",
    "save_model",
    "with_precision",
]
