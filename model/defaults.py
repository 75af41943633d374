"""The model's defaults that TensorFlow-free code needs too (the job's driver,
its command line, the output tools): where the shipped weights are and how many
objects go through one forward pass. Defined here once; this module must never
import TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

# The weights voxray ships (trained `compact-wide`, see docs/model-card.md).
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "compact-wide.keras"
# Their id (model.saving.model_id), so that the job's driver knows it without
# loading them (tests/test_train.py holds the two together).
DEFAULT_MODEL_ID = "compact-wide-e44568db0276"

# Objects per forward pass unless a caller says otherwise (the job's --batch-size):
# on CPU, and on GPU (where the host's cost per call, not the model, bounds
# small calls: docs/benchmarks.md, "Feeding the accelerator").
BATCH_SIZE = 16
GPU_BATCH_SIZE = 256
