"""The output layout and the manifest's own columns: the pinned contract that
the sink writes and every reader relies on, in one place. This module must never
change a name or a type without the README and the tests changing with it.
"""

from __future__ import annotations

import pyarrow as pa

SHARDS = "shards"  # OUTPUT/shards/<name>.npz
MANIFESTS = "manifests"  # OUTPUT/manifests/<name>.parquet
SUCCESS = "_SUCCESS"  # OUTPUT/_SUCCESS, JSON, written last

# Row states: "ok" (a grid) and "failed" (a reason) are committed; "skipped"
# (committed by an earlier run) lives only between the stages and is counted.
OK, FAILED, SKIPPED = "ok", "failed", "skipped"

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
        ("row_key", pa.string()),  # object_id, or a content digest when it is null
    ]
)
