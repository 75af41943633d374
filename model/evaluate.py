"""Reconstruction quality on a labelled dataset: mean IoU at threshold 0.4 by
number of views and by category, and the image-blind category-mean oracle.

Test-time preprocessing as the original: centre crop, background 240. The
views of object i are the first v of a permutation seeded by (seed, i), so
every model is scored on the same views. Reads data only; never writes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from model.data import Catalog, evaluation_views
from model.defaults import BATCH_SIZE
from model.voxels import GRID, THRESHOLD, iou, unpack_voxels


def evaluate(
    model,
    data: str,
    views: Sequence[int] = (1, 2, 3, 4, 5),
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
    precision: str = "fp32",
    storage_options: dict | None = None,
) -> dict:
    """Mean IoU@0.4 of `model` (a keras.Model, a .keras URL or a Reconstructor).

    Returns `{"objects", "iou_by_views": {"1": ..}, "iou_by_category": {cat:
    iou at the most views}, "iou_by_category_and_views": {cat: {"1": ..}}}`.
    """
    from model.reconstructor import Reconstructor

    rec = (
        model
        if isinstance(model, Reconstructor)
        else Reconstructor(model, batch_size=batch_size, precision=precision)
    )
    views = sorted(views)
    scores: dict[int, list[float]] = defaultdict(list)
    by_cat: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    pending: list[tuple[dict, int]] = []

    def flush():
        truth = np.stack([unpack_voxels(r["voxels"]) for r, _ in pending])
        for v in views:
            batch = [evaluation_views(r, i, v, rec.image_size, seed) for r, i in pending]
            got = iou(rec.predict(batch) >= THRESHOLD, truth)
            for (r, _), x in zip(pending, got, strict=True):
                scores[v].append(float(x))
                by_cat[r.get("category") or "all"][v].append(float(x))
        pending.clear()

    n = 0
    for index, row in enumerate(Catalog(data, storage_options)):
        if limit is not None and index >= limit:
            break
        pending.append((row, index))
        n += 1
        if len(pending) == 4 * rec.batch_size:
            flush()
    if pending:
        flush()
    return {
        "objects": n,
        "model": rec.model_id,
        "precision": rec.precision,
        "iou_by_views": {str(v): round(float(np.mean(scores[v])), 4) for v in views},
        "iou_by_category": {
            c: round(float(np.mean(d[views[-1]])), 4) for c, d in sorted(by_cat.items())
        },
        "iou_by_category_and_views": {
            c: {str(v): round(float(np.mean(d[v])), 4) for v in views}
            for c, d in sorted(by_cat.items())
        },
    }


def category_means(data: str, storage_options: dict | None = None) -> dict[str, np.ndarray]:
    """Mean occupancy `float [32, 32, 32]` of each category of a dataset."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = defaultdict(int)
    for row in Catalog(data, storage_options).iter_rows(["voxels", "category"]):
        c = row.get("category") or "all"
        sums[c] = sums.get(c, 0) + unpack_voxels(row["voxels"])
        counts[c] += 1
    return {c: sums[c] / counts[c] for c in sums}


def oracle(
    means: dict[str, np.ndarray],
    data: str,
    limit: int | None = None,
    threshold: float = 0.5,
    storage_options: dict | None = None,
) -> dict:
    """IoU of predicting each object's category-mean shape (thresholded):
    what a model gets that reads the category and ignores the images."""
    scores: dict[str, list[float]] = defaultdict(list)
    for index, row in enumerate(Catalog(data, storage_options).iter_rows(["voxels", "category"])):
        if limit is not None and index >= limit:
            break
        c = row.get("category") or "all"
        pred = means[c] >= threshold if c in means else np.zeros(GRID, bool)
        scores[c].append(float(iou(pred, unpack_voxels(row["voxels"]))))
    every = [x for xs in scores.values() for x in xs]
    return {
        "oracle_iou": round(float(np.mean(every)), 4),
        "oracle_iou_by_category": {
            c: round(float(np.mean(x)), 4) for c, x in sorted(scores.items())
        },
    }
