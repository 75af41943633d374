"""Training and evaluation data: Parquet datasets in the job's input schema,
read row group by row group, and turned into model inputs.

The order of samples is a pure function of (seed, sample number) and of the
dataset's row-group layout, never of timing or threads, so a resumed training
run sees exactly the samples and augmentations the uninterrupted one would.
Images go through the model's input contract (`model.images`), as in the
reconstruction job. URLs are opened with fsspec and the storage options the
caller resolved (`pipeline.io.storage_options`). Nothing here imports TensorFlow.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from model.images import CROP_FRACTION, TEST_BACKGROUND, read_rgba, to_model_input
from model.voxels import unpack_voxels

COLUMNS = ["object_id", "views", "voxels", "category"]


class Catalog:
    """A Parquet dataset at a URL, addressed by row group.

    Only metadata is read up front; `rows(g)` reads one row group.
    """

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = url
        self.fs, root = url_to_fs(url, **(storage_options or {}))
        files = [root] if self.fs.isfile(root) else sorted(self.fs.find(root))
        files = [
            f for f in files if f.endswith(".parquet") and not posixpath.basename(f).startswith(".")
        ]
        if not files:
            raise FileNotFoundError(f"no .parquet files under {url}")
        self.groups: list[tuple[str, int, int]] = []
        for path in files:
            with self.fs.open(path, "rb") as fh:
                meta = pq.ParquetFile(fh).metadata
            for g in range(meta.num_row_groups):
                self.groups.append((path, g, meta.row_group(g).num_rows))
        self.num_rows = sum(n for _, _, n in self.groups)

    def rows(self, group: int, columns: list[str] = COLUMNS) -> list[dict]:
        path, g, _ = self.groups[group]
        with self.fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            names = [c for c in columns if c in pf.schema_arrow.names]
            return pf.read_row_group(g, columns=names).to_pylist()

    def iter_rows(self, columns: list[str] = COLUMNS) -> Iterator[dict]:
        for g in range(len(self.groups)):
            yield from self.rows(g, columns)

    def __iter__(self) -> Iterator[dict]:
        return self.iter_rows()


@dataclass(frozen=True)
class Augment:
    """The original recipe's training-time randomness."""

    max_views: int = 5
    background: tuple[int, int] = (225, 255)
    crop_fraction: float = CROP_FRACTION
    flip_prob: float = 0.5


def training_sample(
    row: dict, image_size: int, rng: np.random.Generator, aug: Augment
) -> tuple[np.ndarray, np.ndarray]:
    """(views uint8 [k, S, S, 3], voxels bool [32, 32, 32]) for one object:
    1..max_views of its renders, each on a random background, randomly
    cropped and flipped."""
    n = len(row["views"])
    k = int(rng.integers(1, min(aug.max_views, n) + 1))
    chosen = rng.choice(n, size=k, replace=False)
    views = []
    for v in chosen:
        bg = tuple(int(c) for c in rng.integers(aug.background[0], aug.background[1] + 1, 3))
        views.append(
            to_model_input(
                read_rgba(row["views"][v]),
                image_size,
                background=bg,
                crop_fraction=aug.crop_fraction,
                offset=(float(rng.random()), float(rng.random())),
                flip=bool(rng.random() < aug.flip_prob),
            )
        )
    return np.stack(views), unpack_voxels(row["voxels"])


def evaluation_views(row: dict, index: int, views: int, image_size: int, seed: int) -> np.ndarray:
    """The first `views` of a fixed random order of the object's renders (the
    order depends on (seed, index) only, so view sets are nested: 2 views
    contain the 1-view set), centre-cropped on the test background."""
    order = np.random.default_rng([seed, index]).permutation(len(row["views"]))
    return np.stack(
        [
            to_model_input(read_rgba(row["views"][v]), image_size, background=TEST_BACKGROUND)
            for v in order[:views]
        ]
    )


class SampleStream:
    """The training sample sequence: epochs of row-group windows.

    Epoch e visits the row groups in a seeded random order, `window` groups at
    a time; the rows of a window are shuffled together. Sample number i is
    therefore located from metadata alone, and its augmentation is seeded by
    (seed, i): `batches(start_step)` resumes exactly.
    """

    def __init__(self, catalog: Catalog, batch: int, seed: int, window: int = 4):
        self.catalog, self.batch, self.seed, self.window = catalog, batch, seed, window

    def _epoch_windows(self, epoch: int) -> list[list[int]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.catalog.groups))
        return [list(order[i : i + self.window]) for i in range(0, len(order), self.window)]

    def samples(self, start: int) -> Iterator[tuple[int, dict]]:
        """(sample number, row) from sample number `start` on, forever."""
        n = self.catalog.num_rows
        epoch, offset = divmod(start, n)
        i = start
        while True:
            seen = 0
            for w, groups in enumerate(self._epoch_windows(epoch)):
                size = sum(self.catalog.groups[g][2] for g in groups)
                if seen + size <= offset:
                    seen += size
                    continue
                rows = [r for g in groups for r in self.catalog.rows(g)]
                perm = np.random.default_rng([self.seed, epoch, w]).permutation(len(rows))
                for j in perm[offset - seen :]:
                    yield i, rows[j]
                    i += 1
                seen += size
                offset = seen
            epoch, offset = epoch + 1, 0

    def batches(self, start_step: int) -> Iterator[list[tuple[int, dict]]]:
        it = self.samples(start_step * self.batch)
        while True:
            yield [next(it) for _ in range(self.batch)]
