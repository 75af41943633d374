"""Dataset-card numbers: the mean-shape oracle, silhouette agreement, image statistics.

`python -m shapes.stats --objects 650` prints, per category, the IoU an
image-blind oracle gets by predicting the category's mean occupancy
(thresholded at 0.5, estimated on one seed and scored on another), plus
occupancy and image statistics. The number is what a reconstruction model has
to beat; this module must never feed anything back into generation.
"""

from __future__ import annotations

import argparse
import io
import json
import sys

import numpy as np
from PIL import Image

from shapes.categories import CATEGORIES, build
from shapes.dataset import category_of, generate_object, object_rngs, sample_cameras
from shapes.primitives import voxelize
from shapes.render import encode_png, raycast_voxels, render


def voxels_of(seed: int, index: int, category: str) -> np.ndarray:
    """The ground-truth grid of object (seed, index), without rendering it."""
    shape_rng, _ = object_rngs(seed, index)
    return voxelize(build(category, shape_rng))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def oracle_iou(objects: int, fit_seed: int = 0, eval_seed: int = 1) -> dict[str, dict]:
    """Per category: mean IoU of the thresholded mean shape, and mean occupancy."""
    out = {}
    per_cat = max(1, objects // len(CATEGORIES))
    for c, cat in enumerate(CATEGORIES):
        idx = [c + k * len(CATEGORIES) for k in range(per_cat)]
        fit = np.mean([voxels_of(fit_seed, i, cat) for i in idx], 0)
        oracle = fit >= 0.5
        held = [voxels_of(eval_seed, i, cat) for i in idx]
        out[cat] = {
            "oracle_iou": round(float(np.mean([iou(oracle, g) for g in held])), 3),
            "occupancy": round(float(np.mean([g.mean() for g in held])), 4),
            "pairwise_iou": round(
                float(np.mean([iou(held[k], held[k + 1]) for k in range(0, len(held) - 1, 2)])), 3
            ),
        }
    return out


def silhouette_iou(row: dict, size: int | None = None) -> list[float]:
    """IoU of each view's alpha mask with the stored voxels cast through its camera."""
    from shapes.preview import decode_voxels
    from shapes.render import Camera

    grid = decode_voxels(row["voxels"])
    out = []
    for png, cam in zip(row["views"], row["cameras"], strict=True):
        alpha = np.asarray(Image.open(io.BytesIO(png)))[..., 3] > 0
        hit, _ = raycast_voxels(grid, Camera(**cam), size or alpha.shape[0])
        out.append(iou(alpha, hit))
    return out


def silhouette_survey(seed: int, objects: int) -> dict:
    """Silhouette IoU over every view of objects 0..objects-1 of `seed`; lists views under 0.9."""
    scores, low = [], []
    for i in range(objects):
        row = generate_object(seed, i)
        for k, s in enumerate(silhouette_iou(row)):
            scores.append(s)
            if s < 0.9:
                low.append(
                    {"category": row["category"], "object": i, "view": k, "iou": round(s, 3)}
                )
    return {
        "views": len(scores),
        "min": round(float(np.min(scores)), 3),
        "p1": round(float(np.percentile(scores, 1)), 3),
        "median": round(float(np.median(scores)), 3),
        "fraction_at_least_0.9": round(float(np.mean(np.asarray(scores) >= 0.9)), 4),
        "under_0.9": low,
    }


def image_stats(seed: int, objects: int, views: int = 24, size: int = 137) -> dict[str, float]:
    """Mean foreground fraction and PNG size per view, over `objects` objects."""
    fg, nbytes, border = [], [], 0
    for i in range(objects):
        shape_rng, cam_rng = object_rngs(seed, i)
        scene = build(category_of(i), shape_rng)
        for cam in sample_cameras(cam_rng, views):
            rgba = render(scene, cam, size)
            a = rgba[..., 3] > 0
            fg.append(a.mean())
            nbytes.append(len(encode_png(rgba)))
            border += bool(a[0].any() or a[-1].any() or a[:, 0].any() or a[:, -1].any())
    return {
        "foreground_fraction": round(float(np.mean(fg)), 3),
        "png_bytes_mean": round(float(np.mean(nbytes))),
        "views_touching_border": border,
        "views": len(fg),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--objects", type=int, default=650, help="objects per seed, all categories")
    ap.add_argument("--fit-seed", type=int, default=0)
    ap.add_argument("--eval-seed", type=int, default=1)
    ap.add_argument("--image-objects", type=int, default=26, help="objects for image stats")
    ap.add_argument(
        "--silhouette-objects",
        type=int,
        default=0,
        help="only survey render/voxel agreement: every view of this many objects of --eval-seed",
    )
    args = ap.parse_args(argv)
    if args.silhouette_objects:
        print(json.dumps(silhouette_survey(args.eval_seed, args.silhouette_objects)))
        return 0
    oracle = oracle_iou(args.objects, args.fit_seed, args.eval_seed)
    for cat, s in oracle.items():
        print(
            f"{cat:12s} oracle IoU {s['oracle_iou']:.3f}  pairwise IoU {s['pairwise_iou']:.3f}  "
            f"occupancy {s['occupancy']:.4f}"
        )
    mean = np.mean([s["oracle_iou"] for s in oracle.values()])
    print(f"{'mean':12s} oracle IoU {mean:.3f}")
    images = image_stats(args.eval_seed, args.image_objects)
    print(json.dumps(images))
    return 0


if __name__ == "__main__":
    sys.exit(main())
