"""The output layout and the manifest's own columns: the pinned contract that
the sink writes and every reader relies on, in one place. This module must never
change a name or a type without docs/job.md and the tests changing with it.
"""

from __future__ import annotations

import re

import pyarrow as pa

SHARDS = "shards"  # OUTPUT/shards/<name>-<content digest>.npz
MANIFESTS = "manifests"  # OUTPUT/manifests/<name>.parquet
INDEX = "index"  # OUTPUT/index/part-<digest>.parquet: the manifests, folded
SUCCESS = "_SUCCESS"  # OUTPUT/_SUCCESS, JSON, written last
RUNS = "runs"  # OUTPUT/runs/<start>-<id>.json: one record per run
LEASE = "_LEASE"  # OUTPUT/_LEASE, JSON: the running job's driver (pipeline.lease)
LEASES = "leases"  # OUTPUT/leases/<generation>.json: the drivers' claims, one per run
REJECTED = "rejected"  # OUTPUT/rejected/...: files verify --repair set aside (never deleted)

# Row states: "ok" (a grid) or "failed" (a reason).
OK, FAILED = "ok", "failed"

# The manifest's own columns, in order; carried input columns follow them.
# Every reader must accept manifests that lack a column added later (a column is
# only ever added, at the end of a group, and read as null where absent).
MANIFEST_SCHEMA = pa.schema(
    [
        ("object_id", pa.string()),
        ("status", pa.string()),  # "ok" | "failed"
        ("error", pa.string()),  # null when ok
        ("error_kind", pa.string()),  # one of ERROR_KINDS, null when ok
        ("warning", pa.string()),  # views an ok row left out and why, null when none
        ("shard", pa.string()),  # relative to OUTPUT, null when failed
        ("index", pa.int32()),  # row in the shard's arrays
        ("n_views", pa.int32()),  # views used (at most --max-views)
        ("n_views_given", pa.int32()),  # views in the input row
        ("occupied_voxels", pa.int32()),  # grid >= threshold * 255
        ("threshold", pa.float64()),
        ("model", pa.string()),  # stable id of the weights
        # "fp32" | "bf16": the arithmetic the grid was computed in (the job's
        # --precision as resolved on the actor's device); null for a row that
        # never reached the model. Manifests of an older voxray lack the
        # column: readers take it as null (pipeline.index, pipeline.results).
        ("precision", pa.string()),
        ("iou", pa.float32()),  # against the input's voxels, else null
        ("row_key", pa.string()),  # the input row's position: "<fragment>:<row>"
        ("grid_offset", pa.int64()),  # byte offset of the grid's zip record in the shard
        ("grid_bytes", pa.int32()),  # its length: one range read fetches the grid
    ]
)

# A failed row's reason in a few stable words, to group by (the free-text
# ``error`` names views and sizes): the message patterns of pipeline.decode,
# model.images, pipeline.plan/inputs, pipeline.infer and the sink, first match wins.
_ERROR_KINDS = (
    ("read_error", r"^cannot read input "),
    ("empty_views", r"^views is (null|empty)|^view \d+ is null|^view \d+: empty image"),
    ("bad_id", r"^object_id (is null|has \d+ characters)"),
    ("bad_voxels", r"^voxels has \d+ bytes"),
    ("too_large", r"over the limit of|too many pixels|decompression bomb"),
    ("no_picture", r"^view \d+: no picture: "),
    ("empty_view", r"^view \d+: empty view: "),
    ("truncated_image", r"^view \d+: truncated or corrupt"),
    ("undecodable_image", r"^view \d+: "),
    ("inference", r"^inference: "),
    ("internal", r"^(internal|decode): "),
)
ERROR_KINDS = (*(kind for kind, _ in _ERROR_KINDS), "other")


def error_kind(error: str | None) -> str | None:
    """The kind of a failed row's ``error`` (one of ``ERROR_KINDS``; ``other``
    for a reason no rule knows), or None for no error."""
    if error is None:
        return None
    for kind, pattern in _ERROR_KINDS:
        if re.search(pattern, error):
            return kind
    return "other"
