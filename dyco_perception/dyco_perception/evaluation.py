"""ScanNet 3D instance-segmentation benchmark (AP, AP50, AP25), written from the protocol of
the official ``evaluate_semantic_instance.py``.

Protocol, as the official script computes it:
- Ground truth per point is ``label_id * 1000 + instance``; ids whose label is not a benchmark
  class are *void*. Instances under ``min_region_size`` (100) points are not counted as ground
  truth, but a prediction covering them is not punished either.
- Predictions of a non-benchmark label or under 100 points are dropped.
- For every IoU threshold (0.50, 0.55, ... 0.90 and 0.25) and every class, ground-truth
  instances are visited in ascending id order; each takes the first still-unclaimed prediction
  (in input order) with IoU > threshold. Further predictions matching an already-matched ground
  truth are false positives with the lower of the two scores (the match keeps the higher).
- A prediction matching no ground truth is a false positive unless the share of its points on
  void or on too-small ground truth exceeds the threshold.
- AP integrates the precision/recall curve at every distinct score (ties move together),
  starting from an artificial (recall 0, precision 1) point, with the trapezoid-like step widths
  of the official script. AP is NaN for a class absent from the ground truth, 0 when it has
  ground truth but no prediction. Averages are NaN-means over classes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dyco_perception import classes

# Identical float values to the official script (np.arange rounding matters for ">" tests).
OVERLAPS: np.ndarray = np.append(np.arange(0.5, 0.95, 0.05), 0.25)
MIN_REGION_SIZE = 100
_AP_OVERLAPS = ~np.isclose(OVERLAPS, 0.25)
_AP50_INDEX = int(np.flatnonzero(np.isclose(OVERLAPS, 0.5))[0])
_AP25_INDEX = int(np.flatnonzero(np.isclose(OVERLAPS, 0.25))[0])

BENCHMARK_CLASS_NAMES: tuple[str, ...] = tuple(
    classes.SEMANTIC_CLASSES[i] for i in classes.INSTANCE_CLASS_IDS
)
BENCHMARK_NYU40_IDS: tuple[int, ...] = tuple(
    classes.NYU40_IDS[i] for i in classes.INSTANCE_CLASS_IDS
)


@dataclass
class _SceneTable:
    """Everything the matching needs from one scene, without per-point data."""

    gt_class: np.ndarray  # (G,) class index 0..C-1, sorted by gt id
    gt_size: np.ndarray  # (G,) points
    pred_class: np.ndarray  # (P,) class index, input order
    pred_size: np.ndarray  # (P,)
    pred_score: np.ndarray  # (P,) float64
    pred_void: np.ndarray  # (P,) points of the prediction on void
    intersection: np.ndarray  # (G, P) points shared, regardless of class


@dataclass
class EvalResult:
    """Benchmark numbers; None where the benchmark gives NaN (class absent from ground truth)."""

    ap: float | None
    ap50: float | None
    ap25: float | None
    per_class: dict[str, tuple[float | None, float | None, float | None]]
    class_agnostic: dict[str, float | None]
    num_scenes: int = 0
    num_gt_instances: dict[str, int] = field(default_factory=dict)

    def official_dict(self) -> dict[str, list[float | None]]:
        """The layout of the official script's output: average + per class [AP, AP50, AP25]."""
        out: dict[str, list[float | None]] = {"average": [self.ap, self.ap50, self.ap25]}
        out.update({name: list(values) for name, values in self.per_class.items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "AP": self.ap,
            "AP50": self.ap50,
            "AP25": self.ap25,
            "per_class": {k: list(v) for k, v in self.per_class.items()},
            "class_agnostic": dict(self.class_agnostic),
            "num_scenes": self.num_scenes,
            "num_gt_instances": dict(self.num_gt_instances),
        }


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _as_index_lists(pred_masks: Any, num_points: int) -> list[np.ndarray]:
    """Accept a (K, N) boolean array or a sequence of point-index arrays; return unique indices."""
    if isinstance(pred_masks, np.ndarray) and pred_masks.ndim == 2:
        if pred_masks.shape[1] != num_points:
            raise ValueError(
                f"pred_masks has {pred_masks.shape[1]} columns, the scene has {num_points} points"
            )
        return [np.flatnonzero(row) for row in pred_masks]
    out = []
    for k, indices in enumerate(pred_masks):
        indices = np.asarray(indices)
        if indices.dtype == bool:
            if indices.shape != (num_points,):
                raise ValueError(
                    f"boolean mask {k} has shape {indices.shape}, need ({num_points},)"
                )
            out.append(np.flatnonzero(indices))
            continue
        if indices.size and not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"prediction {k}: point indices must be integers, got {indices.dtype}")
        indices = indices.astype(np.int64).ravel()
        if indices.size and (indices.min() < 0 or indices.max() >= num_points):
            raise ValueError(
                f"prediction {k}: point index out of range 0..{num_points - 1} "
                f"({indices.min()}..{indices.max()})"
            )
        out.append(np.unique(indices))
    return out


class InstanceEvaluator:
    """Accumulates scenes, then computes the benchmark. Labels are in ``class_ids`` space
    (NYU40 ids for the ScanNet benchmark); ground truth is ``label * 1000 + instance``."""

    def __init__(
        self,
        class_names: Sequence[str] = BENCHMARK_CLASS_NAMES,
        class_ids: Sequence[int] = BENCHMARK_NYU40_IDS,
        min_region_size: int = MIN_REGION_SIZE,
    ) -> None:
        if len(class_names) != len(class_ids) or not class_ids:
            raise ValueError("class_names and class_ids must be non-empty and of equal length")
        if len(set(class_ids)) != len(class_ids):
            raise ValueError(f"class_ids contain duplicates: {list(class_ids)}")
        self.class_names = tuple(class_names)
        self.class_ids = tuple(int(c) for c in class_ids)
        self.min_region_size = int(min_region_size)
        max_id = max(self.class_ids)
        self._class_index = np.full(max_id + 2, -1, dtype=np.int64)
        self._class_index[list(self.class_ids)] = np.arange(len(self.class_ids))
        self._scenes: list[_SceneTable] = []

    def _lookup(self, labels: np.ndarray) -> np.ndarray:
        """Class index per label, -1 for labels outside the benchmark."""
        labels = np.asarray(labels, dtype=np.int64)
        clipped = np.clip(labels, 0, len(self._class_index) - 1)
        return np.where(labels == clipped, self._class_index[clipped], -1)

    def add_scene(
        self,
        gt_ids: np.ndarray,
        pred_masks: Any,
        pred_labels: np.ndarray,
        pred_scores: np.ndarray,
    ) -> None:
        """Add one scene. ``pred_masks``: (K, N) bool or K arrays of point indices."""
        gt_ids = np.asarray(gt_ids)
        if gt_ids.ndim != 1 or not np.issubdtype(gt_ids.dtype, np.integer):
            raise ValueError(
                f"gt_ids must be a 1-D integer array, got {gt_ids.dtype} {gt_ids.shape}"
            )
        gt_ids = gt_ids.astype(np.int64)
        if gt_ids.size and gt_ids.min() < 0:
            raise ValueError("gt_ids must be >= 0 (label * 1000 + instance, 0 = unannotated)")
        pred_labels = np.asarray(pred_labels, dtype=np.int64).ravel()
        pred_scores = np.asarray(pred_scores, dtype=np.float64).ravel()
        indices = _as_index_lists(pred_masks, gt_ids.size)
        if not len(indices) == pred_labels.size == pred_scores.size:
            raise ValueError(
                f"{len(indices)} masks, {pred_labels.size} labels and {pred_scores.size} scores"
            )
        if not np.all(np.isfinite(pred_scores)):
            raise ValueError("pred_scores must be finite")
        self._scenes.append(self._tabulate(gt_ids, indices, pred_labels, pred_scores))

    def _tabulate(
        self, gt_ids: np.ndarray, indices: list[np.ndarray], labels: np.ndarray, scores: np.ndarray
    ) -> _SceneTable:
        unique_ids, point_to_gt, sizes = np.unique(gt_ids, return_inverse=True, return_counts=True)
        gt_class_all = np.where(unique_ids > 0, self._lookup(unique_ids // 1000), -1)
        keep_gt = gt_class_all >= 0
        gt_rank = np.full(unique_ids.size, -1, dtype=np.int64)
        gt_rank[keep_gt] = np.arange(int(keep_gt.sum()))
        point_gt = gt_rank[point_to_gt]  # -1 on void
        num_gt = int(keep_gt.sum())

        pred_class = self._lookup(labels)
        pred_size = np.array([idx.size for idx in indices], dtype=np.int64)
        keep_pred = (pred_class >= 0) & (pred_size >= self.min_region_size)
        kept = np.flatnonzero(keep_pred)
        intersection = np.zeros((num_gt, kept.size), dtype=np.int64)
        void = np.zeros(kept.size, dtype=np.int64)
        for column, k in enumerate(kept):
            counts = np.bincount(point_gt[indices[k]] + 1, minlength=num_gt + 1)
            void[column] = counts[0]
            intersection[:, column] = counts[1:]
        return _SceneTable(
            gt_class=gt_class_all[keep_gt],
            gt_size=sizes[keep_gt].astype(np.int64),
            pred_class=pred_class[kept],
            pred_size=pred_size[kept],
            pred_score=scores[kept],
            pred_void=void,
            intersection=intersection,
        )

    def compute(self, scenes: Sequence[int] | None = None) -> EvalResult:
        """The benchmark over the added scenes, or over `scenes` (indices in the order added;
        repeats count again, as in a bootstrap resample)."""
        tables = self._scenes if scenes is None else [self._scenes[i] for i in scenes]
        aps = _average_precisions(tables, len(self.class_ids), self.min_region_size, False)
        agnostic = _average_precisions(tables, 1, self.min_region_size, True)
        summary = _summarise(aps)
        agnostic_summary = _summarise(agnostic)
        per_class = {
            name: tuple(_none_if_nan(v) for v in _class_summary(aps[c]))
            for c, name in enumerate(self.class_names)
        }
        num_gt = np.zeros(len(self.class_ids), dtype=np.int64)
        for scene in tables:
            big = scene.gt_size >= self.min_region_size
            num_gt += np.bincount(scene.gt_class[big], minlength=len(self.class_ids))
        return EvalResult(
            ap=_none_if_nan(summary[0]),
            ap50=_none_if_nan(summary[1]),
            ap25=_none_if_nan(summary[2]),
            per_class=per_class,  # type: ignore[arg-type]
            class_agnostic=dict(
                zip(("AP", "AP50", "AP25"), map(_none_if_nan, agnostic_summary), strict=True)
            ),
            num_scenes=len(tables),
            num_gt_instances={n: int(c) for n, c in zip(self.class_names, num_gt, strict=True)},
        )


def _summarise(aps: np.ndarray) -> tuple[float, float, float]:
    """NaN-means over classes (and thresholds, for AP) like the official compute_averages."""
    with np.errstate(invalid="ignore"), _quiet_nanmean():
        return (
            float(np.nanmean(aps[:, _AP_OVERLAPS])),
            float(np.nanmean(aps[:, _AP50_INDEX])),
            float(np.nanmean(aps[:, _AP25_INDEX])),
        )


def _class_summary(class_aps: np.ndarray) -> tuple[float, float, float]:
    return (
        float(np.average(class_aps[_AP_OVERLAPS])),
        float(class_aps[_AP50_INDEX]),
        float(class_aps[_AP25_INDEX]),
    )


class _quiet_nanmean:
    """Silence numpy's 'Mean of empty slice' warning: an all-NaN mean is a legitimate NaN here."""

    def __enter__(self) -> None:
        import warnings

        self._catcher = warnings.catch_warnings()
        self._catcher.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._catcher.__exit__(*exc)


def _average_precisions(
    scenes: list[_SceneTable], num_classes: int, min_size: int, agnostic: bool
) -> np.ndarray:
    """AP per (class, overlap threshold)."""
    aps = np.zeros((num_classes, len(OVERLAPS)))
    for c in range(num_classes):
        views = [_class_view(s, c, agnostic) for s in scenes]
        has_gt = any(bool(np.any(v[1] >= min_size)) for v in views)
        has_pred = any(v[2].size > 0 for v in views)
        for o, threshold in enumerate(OVERLAPS):
            if not has_gt:
                aps[c, o] = math.nan
            elif not has_pred:
                aps[c, o] = 0.0
            else:
                aps[c, o] = _ap_at_threshold(views, float(threshold), min_size)
    return aps


def _class_view(scene: _SceneTable, c: int, agnostic: bool) -> tuple[np.ndarray, ...]:
    """(iou, gt_size, pred_score, pred_size, pred_void, intersection) restricted to class c."""
    gt_sel = np.ones(scene.gt_class.size, bool) if agnostic else scene.gt_class == c
    pred_sel = np.ones(scene.pred_class.size, bool) if agnostic else scene.pred_class == c
    inter = scene.intersection[np.ix_(gt_sel, pred_sel)]
    gt_size = scene.gt_size[gt_sel]
    pred_size = scene.pred_size[pred_sel]
    union = gt_size[:, None] + pred_size[None, :] - inter
    iou = inter / np.maximum(union, 1)
    return iou, gt_size, scene.pred_score[pred_sel], pred_size, scene.pred_void[pred_sel], inter


def _ap_at_threshold(views: list[tuple[np.ndarray, ...]], threshold: float, min_size: int) -> float:
    trues: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    hard_false_negatives = 0
    for iou, gt_size, pred_score, pred_size, pred_void, inter in views:
        t, s, misses = _match_scene(iou, gt_size, pred_score, threshold, min_size)
        fp_scores = _unmatched_false_positives(
            iou, gt_size, pred_score, pred_size, pred_void, inter, threshold, min_size
        )
        trues += [t, np.zeros(fp_scores.size)]
        scores += [s, fp_scores]
        hard_false_negatives += misses
    return _integrate_pr(np.concatenate(trues), np.concatenate(scores), hard_false_negatives)


def _match_scene(
    iou: np.ndarray, gt_size: np.ndarray, pred_score: np.ndarray, threshold: float, min_size: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Greedy matching in ground-truth id order, then prediction order.

    Returns (true flags, scores) of matched ground truth and duplicate false positives, and the
    number of unmatched (counted) ground-truth instances."""
    counted = np.flatnonzero(gt_size >= min_size)
    claimed = np.zeros(pred_score.size, dtype=bool)
    match_score = np.full(counted.size, -np.inf)
    matched = np.zeros(counted.size, dtype=bool)
    duplicate_scores: list[float] = []
    rows, cols = np.nonzero(iou[counted] > threshold)  # row-major: gt order, then pred order
    for row, p in zip(rows.tolist(), cols.tolist(), strict=True):
        if claimed[p]:
            continue
        score = float(pred_score[p])
        if matched[row]:
            # Lower-scored of the two becomes a false positive; the duplicate stays unclaimed.
            duplicate_scores.append(min(match_score[row], score))
            match_score[row] = max(match_score[row], score)
        else:
            matched[row] = True
            match_score[row] = score
            claimed[p] = True
    true_flags = np.concatenate([np.ones(int(matched.sum())), np.zeros(len(duplicate_scores))])
    scores = np.concatenate([match_score[matched], np.asarray(duplicate_scores, dtype=float)])
    return true_flags, scores, int(counted.size - matched.sum())


def _unmatched_false_positives(
    iou: np.ndarray,
    gt_size: np.ndarray,
    pred_score: np.ndarray,
    pred_size: np.ndarray,
    pred_void: np.ndarray,
    inter: np.ndarray,
    threshold: float,
    min_size: int,
) -> np.ndarray:
    """Scores of predictions overlapping no ground truth (any size) above the threshold and
    not mostly lying on void or too-small ground truth."""
    overlaps_any = np.any(iou > threshold, axis=0)
    ignored = pred_void + inter[gt_size < min_size].sum(axis=0)
    is_fp = ~overlaps_any & (ignored / pred_size <= threshold)
    return pred_score[is_fp].astype(np.float64)


def _integrate_pr(trues: np.ndarray, scores: np.ndarray, hard_false_negatives: int) -> float:
    """Area under the precision/recall curve evaluated at every distinct score."""
    if scores.size == 0:
        # All ground truth missed and every prediction ignored: no detections at all. (The
        # official script crashes here; zero is the only meaningful value.)
        return 0.0
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    below = np.concatenate([[0.0], np.cumsum(trues[order])])
    _, first = np.unique(sorted_scores, return_index=True)
    total_true = below[-1]
    true_below = below[first]  # true examples strictly below each distinct score
    tp = total_true - true_below
    fp = (scores.size - first) - tp
    fn = true_below + hard_false_negatives
    precision = np.append(tp / (tp + fp), 1.0)
    recall = np.append(tp / (tp + fn), 0.0)
    padded = np.concatenate([recall[:1], recall, [0.0]])
    step_widths = 0.5 * padded[:-2] - 0.5 * padded[2:]
    return float(np.dot(precision, step_widths))


# --- model-output adapter ---------------------------------------------------------------------


@dataclass
class InstancePredictions:
    """Predicted instances of one scene in the model's terms: semantic ids 0..19."""

    labels: np.ndarray  # (K,) semantic class id per instance (classes.SEMANTIC_CLASSES order)
    scores: np.ndarray  # (K,)
    point_indices: list[np.ndarray]  # K arrays of point indices into the scene

    @classmethod
    def coerce(cls, obj: Any) -> InstancePredictions:
        """Accept this class, an object/dict with labels|class_ids, scores and
        point_indices|masks, an object with ``.instances`` (a SegmentationResult), or a
        sequence of per-instance dicts/objects with class_id|label, score, point_indices."""
        if isinstance(obj, cls):
            return obj
        get = (lambda k: obj.get(k)) if isinstance(obj, dict) else (lambda k: getattr(obj, k, None))
        labels = _first_present(get, ("labels", "class_ids", "semantic_ids"))
        masks = _first_present(get, ("point_indices", "masks", "indices"))
        scores = get("scores")
        if labels is not None and masks is not None and scores is not None:
            return cls(np.asarray(labels), np.asarray(scores), list(masks))
        instances = get("instances")  # e.g. dyco_perception's SegmentationResult
        if instances is not None:
            return cls._from_instances(list(instances))
        if isinstance(obj, Sequence):
            return cls._from_instances(obj)
        raise ValueError(
            f"cannot read predictions from {type(obj).__name__}: need labels/class_ids, "
            "scores and point_indices/masks"
        )

    @classmethod
    def _from_instances(cls, items: Sequence[Any]) -> InstancePredictions:
        labels, scores, indices = [], [], []
        for item in items:
            get = (
                (lambda k, i=item: i.get(k))
                if isinstance(item, dict)
                else (lambda k, i=item: getattr(i, k, None))
            )
            label = _first_present(get, ("label", "class_id", "semantic_id"))
            points = _first_present(get, ("point_indices", "indices", "mask"))
            score = get("score")
            if label is None or points is None or score is None:
                raise ValueError("each instance needs label/class_id, score and point_indices")
            labels.append(int(label))
            scores.append(float(score))
            indices.append(np.asarray(points))
        return cls(np.asarray(labels, np.int64), np.asarray(scores, np.float64), indices)


def class_hypotheses(instances: Sequence[Any], k: int) -> InstancePredictions:
    """Each instance under its `k` most probable classes (`Instance.class_probs`): its own
    class at its score, each runner-up c at score * p(c) / max p. k = 1 is the instances as
    they are. Several labels per mask is how ISBNet and Mask3D report benchmark AP; robots get
    one label per instance, so both numbers are reported, never mixed up."""
    if k < 1:
        raise ValueError(f"class hypotheses must be >= 1, got {k}")
    labels, scores, indices = [], [], []
    for inst in instances:
        probs = np.asarray(getattr(inst, "class_probs", ()), dtype=np.float64)
        runners_up = [int(c) for c in np.argsort(-probs, kind="stable") if c != inst.class_id]
        top = max(float(probs.max(initial=0.0)), 1e-12)
        labels.append(int(inst.class_id))
        scores.append(float(inst.score))
        indices.append(np.asarray(inst.point_indices))
        for c in runners_up[: k - 1]:
            if probs[c] > 0:
                labels.append(c)
                scores.append(float(inst.score) * probs[c] / top)
                indices.append(indices[-1])
    return InstancePredictions(np.asarray(labels, np.int64), np.asarray(scores), indices)


def _first_present(get: Any, keys: Sequence[str]) -> Any:
    for key in keys:
        value = get(key)
        if value is not None:
            return value
    return None


def benchmark_gt_ids(semantic: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """Benchmark ground truth (NYU40 * 1000 + instance) from semantic ids 0..19 (-100 ignore)
    and instance ids (0 none). Points outside instances, or of ignored/stuff classes, are void."""
    semantic = np.asarray(semantic, dtype=np.int64)
    instance = np.asarray(instance, dtype=np.int64)
    if semantic.shape != instance.shape or semantic.ndim != 1:
        raise ValueError(f"semantic {semantic.shape} and instance {instance.shape} must be (N,)")
    if semantic.size and semantic.max() >= classes.NUM_SEMANTIC_CLASSES:
        raise ValueError(f"semantic ids must be < {classes.NUM_SEMANTIC_CLASSES}")
    valid = (instance > 0) & (semantic >= 0) & np.isin(semantic, classes.INSTANCE_CLASS_IDS)
    nyu = classes.semantic_to_nyu40(np.where(valid, semantic, 0))
    return np.where(valid, nyu * 1000 + instance, 0)


def evaluate_predictions(
    scenes: Iterable[tuple[np.ndarray, np.ndarray, Any]],
    progress: bool = False,
) -> dict[str, Any]:
    """Benchmark a model over scenes of (gt semantic 0..19/-100, gt instance 0..K, predictions).

    ``predictions`` is anything ``InstancePredictions.coerce`` reads (semantic-id labels).
    Returns ``EvalResult.to_dict()``: AP, AP50, AP25, per_class, class_agnostic, counts."""
    return build_evaluator(scenes, progress).compute().to_dict()


def build_evaluator(
    scenes: Iterable[tuple[np.ndarray, np.ndarray, Any]], progress: bool = False
) -> InstanceEvaluator:
    """An evaluator holding `scenes` (as ``evaluate_predictions`` reads them), to score them
    all or any resample of them (``compute(scenes=...)``)."""
    evaluator = InstanceEvaluator()
    iterator: Iterable[tuple[np.ndarray, np.ndarray, Any]] = scenes
    if progress:
        from tqdm import tqdm

        iterator = tqdm(scenes, desc="evaluate", unit="scan")
    for semantic, instance, predictions in iterator:
        preds = InstancePredictions.coerce(predictions)
        labels = np.asarray(preds.labels, dtype=np.int64)
        in_range = (labels >= 0) & (labels < classes.NUM_SEMANTIC_CLASSES)
        if not np.all(in_range):
            raise ValueError(
                f"predicted labels must be semantic ids 0..19, got {labels[~in_range]}"
            )
        evaluator.add_scene(
            benchmark_gt_ids(semantic, instance),
            preds.point_indices,
            classes.semantic_to_nyu40(labels),
            preds.scores,
        )
    return evaluator


def load_case(path: str) -> list[tuple[str, np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]]:
    """Read an eval-vector case (see shared eval_vectors README): per scan (name, gt, masks,
    labels, scores), scans in sorted name order."""
    with np.load(path) as data:
        names = sorted({key.split("/")[0] for key in data.files})
        out = []
        for name in names:
            try:
                offsets = data[f"{name}/pred_offsets"].astype(np.int64)
                points = data[f"{name}/pred_points"]
                masks = [points[offsets[k] : offsets[k + 1]] for k in range(offsets.size - 1)]
                out.append(
                    (
                        name,
                        data[f"{name}/gt"],
                        masks,
                        data[f"{name}/pred_label"],
                        data[f"{name}/pred_score"],
                    )
                )
            except KeyError as err:
                raise ValueError(f"{path}: scan {name} lacks array {err}") from err
    return out


def evaluate_case(path: str) -> EvalResult:
    """Score one eval-vector case with the ScanNet benchmark classes."""
    evaluator = InstanceEvaluator()
    for _, gt, masks, labels, scores in load_case(path):
        evaluator.add_scene(gt, masks, labels, scores)
    return evaluator.compute()
