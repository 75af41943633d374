"""The output layout and the manifest's own columns: the pinned contract that
the sink writes and every reader relies on, in one place. This module must never
change a name or a type without docs/job.md and the tests changing with it.
"""

from __future__ import annotations

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
MANIFEST_SCHEMA = pa.schema(
    [
        ("object_id", pa.string()),
        ("status", pa.string()),  # "ok" | "failed"
        ("error", pa.string()),  # null when ok
        ("shard", pa.string()),  # relative to OUTPUT, null when failed
        ("index", pa.int32()),  # row in the shard's arrays
        ("n_views", pa.int32()),  # views used (at most --max-views)
        ("n_views_given", pa.int32()),  # views in the input row
        ("occupied_voxels", pa.int32()),  # grid >= threshold * 255
        ("threshold", pa.float64()),
        ("model", pa.string()),  # stable id of the weights
        ("iou", pa.float32()),  # against the input's voxels, else null
        ("row_key", pa.string()),  # the input row's position: "<fragment>:<row>"
        ("grid_offset", pa.int64()),  # byte offset of the grid's zip record in the shard
        ("grid_bytes", pa.int32()),  # its length: one range read fetches the grid
    ]
)
