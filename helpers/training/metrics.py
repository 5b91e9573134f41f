"""Evaluation metrics on whole evaluation sets (NumPy in, floats out).

Multi-label (AudioSet, FSD50K, OpenMIC): mean average precision (mAP) and ROC-AUC, each the
mean over classes of scikit-learn's per-class score. A class without any positive example in
the evaluation set has no defined AP (and no ROC-AUC without negatives too); such classes are
left out of the mean instead of counting as 0 or making the whole metric NaN. On the full
AudioSet evaluation set every class has positives, so this is exactly the usual mAP.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def _binary_targets(targets: np.ndarray) -> np.ndarray:
    """Hard 0/1 labels (evaluation targets are multi-hot; > 0.5 also handles mixed-up ones)."""
    return (np.asarray(targets) > 0.5).astype(np.int8)


def _check_shapes(scores: np.ndarray, targets: np.ndarray) -> None:
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores and targets must both be [examples, classes]; got {scores.shape} "
                         f"and {targets.shape}")


def _weights(weights: np.ndarray | None, labels: np.ndarray) -> np.ndarray:
    """Per-sample-per-class weights ``[N, C]`` (all ones when None)."""
    if weights is None:
        return np.ones(labels.shape)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != labels.shape:
        raise ValueError(f"weights must have the shape of the targets {labels.shape}; got {weights.shape}")
    return weights


def average_precision_per_class(scores: np.ndarray, targets: np.ndarray,
                                weights: np.ndarray | None = None) -> np.ndarray:
    """AP of every class; NaN for classes without (weighted) positives.

    ``weights`` ``[N, C]``: weight of every example in every class (scikit-learn's
    ``sample_weight``, class by class); e.g. OpenMIC's masks leave out unannotated labels.
    """
    scores, labels = np.asarray(scores, dtype=np.float64), _binary_targets(targets)
    _check_shapes(scores, labels)
    w = _weights(weights, labels)
    ap = np.full(labels.shape[1], np.nan)
    for c in np.flatnonzero((labels * w).sum(axis=0) > 0):
        ap[c] = average_precision_score(labels[:, c], scores[:, c], sample_weight=w[:, c])
    return ap


def roc_auc_per_class(scores: np.ndarray, targets: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """ROC-AUC of every class; NaN for classes that lack (weighted) positives or negatives.

    ``weights`` as for :func:`average_precision_per_class`.
    """
    scores, labels = np.asarray(scores, dtype=np.float64), _binary_targets(targets)
    _check_shapes(scores, labels)
    w = _weights(weights, labels)
    auc = np.full(labels.shape[1], np.nan)
    positives, negatives = (labels * w).sum(axis=0), ((1 - labels) * w).sum(axis=0)
    for c in np.flatnonzero((positives > 0) & (negatives > 0)):
        auc[c] = roc_auc_score(labels[:, c], scores[:, c], sample_weight=w[:, c])
    return auc


def _nanmean(values: np.ndarray) -> float:
    if np.all(np.isnan(values)):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values))


def multilabel_metrics(scores: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """``mAP``, ``roc_auc`` and ``classes_scored`` (how many classes the mAP averages over)."""
    ap = average_precision_per_class(scores, targets)
    return {
        "mAP": _nanmean(ap),
        "roc_auc": _nanmean(roc_auc_per_class(scores, targets)),
        "classes_scored": float(np.sum(~np.isnan(ap))),
    }


def accuracy(scores: np.ndarray, targets: np.ndarray) -> float:
    """Single-label accuracy; ``targets`` are class indices ``[N]`` or (soft) one-hot ``[N, C]``."""
    scores, targets = np.asarray(scores), np.asarray(targets)
    labels = targets.argmax(axis=1) if targets.ndim == 2 else targets.astype(np.int64)
    if len(labels) == 0:
        return float("nan")
    return float(np.mean(scores.argmax(axis=1) == labels))
