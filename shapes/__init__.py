"""voxray's training and demo data: procedural ShapeNet-like objects and a ShapeNet importer.

The public surface is re-exported here: `CATEGORIES` (ShapeNet's 13, in its
order), `generate_object` (one row, a pure function of seed and index) and
`make_dataset` (a whole Parquet dataset on Ray). Importing this package must
never start Ray or touch storage.
"""

from shapes.categories import CATEGORIES, SYNSETS
from shapes.dataset import DatasetError, generate_object, make_dataset

__all__ = ["CATEGORIES", "SYNSETS", "DatasetError", "generate_object", "make_dataset"]
