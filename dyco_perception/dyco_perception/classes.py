"""The one class list of the project: ScanNet's 20 semantic classes and their NYU40 ids.

Everything that names a class (model heads, training targets, the evaluator, the node's class
map) reads it from here; checkpoints store a copy in their model card, checked on load.
"""

from __future__ import annotations

import numpy as np

IGNORE_LABEL = -100

# (name, NYU40 id), in semantic-id order 0..19 (the ScanNet v2 20-class benchmark order).
_SCANNET20 = (
    ("wall", 1),
    ("floor", 2),
    ("cabinet", 3),
    ("bed", 4),
    ("chair", 5),
    ("sofa", 6),
    ("table", 7),
    ("door", 8),
    ("window", 9),
    ("bookshelf", 10),
    ("picture", 11),
    ("counter", 12),
    ("desk", 14),
    ("curtain", 16),
    ("refrigerator", 24),
    ("shower curtain", 28),
    ("toilet", 33),
    ("sink", 34),
    ("bathtub", 36),
    ("otherfurniture", 39),
)

SEMANTIC_CLASSES: tuple[str, ...] = tuple(name for name, _ in _SCANNET20)
NYU40_IDS: tuple[int, ...] = tuple(nyu for _, nyu in _SCANNET20)
NUM_SEMANTIC_CLASSES = len(SEMANTIC_CLASSES)

# Stuff classes never become instances; the 18 others are the instance benchmark's classes.
STUFF_CLASS_IDS: tuple[int, ...] = (0, 1)
INSTANCE_CLASS_IDS: tuple[int, ...] = tuple(
    i for i in range(NUM_SEMANTIC_CLASSES) if i not in STUFF_CLASS_IDS
)

_NYU40_TO_SEMANTIC = np.full(256, IGNORE_LABEL, dtype=np.int64)
for _semantic_id, _nyu_id in enumerate(NYU40_IDS):
    _NYU40_TO_SEMANTIC[_nyu_id] = _semantic_id


def nyu40_to_semantic(nyu40: np.ndarray) -> np.ndarray:
    """Map NYU40 ids to semantic ids 0..19; every other id becomes IGNORE_LABEL."""
    nyu40 = np.asarray(nyu40)
    if nyu40.size and (nyu40.min() < 0 or nyu40.max() > 255):
        raise ValueError(f"NYU40 ids must lie in 0..255, got {nyu40.min()}..{nyu40.max()}")
    return _NYU40_TO_SEMANTIC[nyu40.astype(np.int64)]


def semantic_to_nyu40(semantic: np.ndarray) -> np.ndarray:
    """Map semantic ids 0..19 back to NYU40 ids (for the benchmark's label format)."""
    return np.asarray(NYU40_IDS, dtype=np.int64)[np.asarray(semantic, dtype=np.int64)]
