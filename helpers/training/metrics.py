"""Evaluation metrics on whole evaluation sets, computed on tensors wherever they are (CPU or GPU).

Multi-label (AudioSet, FSD50K, OpenMIC): mean average precision (mAP) and ROC-AUC, the mean over
classes of the per-class score. Both are scikit-learn's definitions (``average_precision_score``,
``roc_auc_score``, optionally with ``sample_weight``), ties included, computed for all classes
at once with one sort and cumulative sums (equal to scikit-learn to 1e-6; ``tests/test_metrics.py``).
A class without any positive example has no defined AP (and no ROC-AUC without negatives
either): it gets NaN and is left out of the mean instead of counting as 0. On the full AudioSet
evaluation set every class has positives, so this is exactly the usual mAP.

Why not scikit-learn: its per-class loop takes 5.8 s for 20k clips x 527 classes on a 2-core CPU,
with every GPU idle meanwhile; here it is one sort of the score matrix, on the device that holds
the logits (timed by ``benchmarks/train_loop.py``). Why not torchmetrics: it loops over classes
with data-dependent shapes (a host sync per class), has no per-sample weights, and scores classes
without positives instead of leaving them out.
"""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray


def _as_tensors(scores: ArrayLike, targets: ArrayLike, weights: ArrayLike | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Scores, hard 0/1 labels (> 0.5, so mixed-up targets work too) and weights, on the scores' device."""
    scores = torch.as_tensor(scores)
    labels = torch.as_tensor(targets, device=scores.device) > 0.5
    if scores.shape != labels.shape or scores.dim() != 2:
        raise ValueError(f"scores and targets must both be [examples, classes]; got {tuple(scores.shape)} "
                         f"and {tuple(labels.shape)}")
    if weights is not None:
        weights = torch.as_tensor(weights, device=scores.device)
        if weights.shape != scores.shape:
            raise ValueError(f"weights must be [examples, classes] like the scores {tuple(scores.shape)}; "
                             f"got {tuple(weights.shape)}")
    return scores, labels, weights


def _accumulation_dtype(device: torch.device) -> torch.dtype:
    # float64 keeps weighted sums over 20k examples exact to 1e-6; MPS has no float64
    return torch.float32 if device.type == "mps" else torch.float64


def _sort_descending(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of ``scores`` sorted in descending order: ``(keys, order)``, where ``keys`` sort like
    the scores and are equal exactly where the scores are equal.

    The keys are integers: IEEE floats order like their bit patterns once the magnitude bits of
    negative numbers are flipped (``+ 0.0`` turns -0.0 into +0.0 first, so the two zeros tie, as
    they compare); integers sort several times faster than floats on the CPU. There, float32
    scores go one step further: key and example index packed into one int64 are sorted by value
    with NumPy's SIMD sort (measured 5x faster than ``torch.sort`` with indices, 20k x 527 scores).
    """
    if scores.dtype not in (torch.float32, torch.float64):
        scores = scores.float()  # half and bfloat16 convert exactly
    bits = (scores + 0.0).view(torch.int32 if scores.dtype == torch.float32 else torch.int64)
    descending = ~torch.where(bits < 0, bits ^ torch.iinfo(bits.dtype).max, bits)  # ascending = score descending
    if scores.device.type != "cpu" or bits.dtype != torch.int32:
        return torch.sort(descending, dim=1)
    index = torch.arange(scores.shape[1], dtype=torch.int64)
    packed = torch.from_numpy(np.sort(((descending.to(torch.int64) << 32) | index).numpy(), axis=1))
    return packed >> 32, packed & 0xFFFFFFFF


#: PyTorch's CPU ops split work among threads above this many elements (``at::internal::GRAIN_SIZE``)
_PARALLEL_GRAIN = 32768


def _classes_per_chunk(device: torch.device, examples: int) -> int:
    """Classes scored together: on a GPU enough to fill it with bounded memory; on a CPU few enough
    that every op stays below the parallel grain and runs serially within the caches.

    Threads buy little on these memory-bound ops and cost a wait for the slowest thread in every
    one of them: on a 2-core machine that other processes also used, 20k x 527 took 0.8 s with one
    class per chunk against 3.6-9.5 s with 32 (2 threads; 0.5-1.5 s either way with 1 thread).
    """
    return 64 if device.type != "cpu" else max(1, _PARALLEL_GRAIN // max(examples, 1))


def _ap_and_auc_of_rows(scores: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """AP and ROC-AUC of each column, as scikit-learn defines them (ties form one threshold).

    Per class (rows of ``[classes, examples]``), the examples in descending score order, with
    ``tp``/``fp`` the cumulated (weighted) positives/negatives. Tied examples form one threshold,
    so what a threshold counts is read at the end of its tie group (``end``); at the first example
    of a group, ``tp - pos`` and ``fp - neg`` are the counts of the threshold before.

    * AP = sum over thresholds of (recall step x precision) = sum over positives of the
      precision of their threshold, over all positives;
    * ROC-AUC = trapezoids between consecutive thresholds: per group, its negatives times the
      mean of the true-positive counts before and after it, over positives x negatives.
    """
    dtype = _accumulation_dtype(scores.device)
    sorted_keys, order = _sort_descending(scores)
    is_pos = labels.gather(1, order)
    n = scores.shape[1]
    index = torch.arange(n, device=scores.device)
    if weights is None:
        mass, pos = 1.0, is_pos.to(dtype)
    else:
        mass = weights.gather(1, order).to(dtype)
        pos = is_pos * mass
    neg = mass - pos
    tp, fp = pos.cumsum(1), neg.cumsum(1)
    changes = sorted_keys[:, 1:] != sorted_keys[:, :-1]
    edge = torch.ones_like(changes[:, :1])
    last_of_group = torch.cat((changes, edge), dim=1)
    first_of_group = torch.cat((edge, changes), dim=1)
    end = torch.where(last_of_group, index, n - 1).flip(1).cummin(1).values.flip(1)
    tp_end, fp_end = tp.gather(1, end), fp.gather(1, end)

    positives, negatives = tp[:, -1], fp[:, -1]
    predicted = tp_end + fp_end
    precision = torch.where(predicted > 0, tp_end / predicted, 0.0)
    ap = (pos * precision).sum(1) / positives
    trapezoids = first_of_group * (fp_end - (fp - neg)) * (tp - pos + tp_end)
    auc = trapezoids.sum(1) / (2 * positives * negatives)
    return (torch.where(positives > 0, ap, torch.nan),
            torch.where((positives > 0) & (negatives > 0), auc, torch.nan))


def _ap_and_auc(scores: ArrayLike, targets: ArrayLike, weights: ArrayLike | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    scores, labels, weights = _as_tensors(scores, targets, weights)
    # one row per class, contiguous: the chunks below are then contiguous too
    by_class = [scores.T.contiguous(), labels.T.contiguous(), None if weights is None else weights.T.contiguous()]
    aps, aucs = [], []
    chunk = _classes_per_chunk(scores.device, scores.shape[0])
    for start in range(0, scores.shape[1], chunk):
        rows = [None if x is None else x[start:start + chunk] for x in by_class]
        ap, auc = _ap_and_auc_of_rows(*rows)
        aps.append(ap)
        aucs.append(auc)
    if not aps:
        empty = torch.empty(0, dtype=_accumulation_dtype(scores.device), device=scores.device)
        return empty, empty
    return torch.cat(aps), torch.cat(aucs)


def average_precision_per_class(scores: ArrayLike, targets: ArrayLike, weights: ArrayLike | None = None
                                ) -> torch.Tensor:
    """AP of every class ``[classes]``, NaN for classes without (weighted) positives.

    ``scores`` and ``targets`` are ``[examples, classes]`` tensors or arrays (targets > 0.5 count
    as positive); ``weights`` (optional, ``[examples, classes]``, >= 0) weighs each example in
    each class like scikit-learn's ``sample_weight`` applied per class, e.g. a 0/1 mask of the
    labels that were annotated. The result is float64 on the scores' device.
    """
    return _ap_and_auc(scores, targets, weights)[0]


def roc_auc_per_class(scores: ArrayLike, targets: ArrayLike, weights: ArrayLike | None = None) -> torch.Tensor:
    """ROC-AUC of every class ``[classes]``, NaN for classes that lack (weighted) positives or negatives.

    Arguments as in :func:`average_precision_per_class`.
    """
    return _ap_and_auc(scores, targets, weights)[1]


def multilabel_metrics(scores: ArrayLike, targets: ArrayLike, weights: ArrayLike | None = None) -> dict[str, float]:
    """``mAP``, ``roc_auc`` and ``classes_scored`` (how many classes the mAP averages over).

    Means over the classes where the score is defined (NaN when no class is); read to the host
    once, at the end.
    """
    ap, auc = _ap_and_auc(scores, targets, weights)
    values = torch.stack((ap.nanmean(), auc.nanmean(), (~ap.isnan()).sum().to(ap.dtype))).tolist()
    return dict(zip(("mAP", "roc_auc", "classes_scored"), values, strict=True))


def accuracy(scores: ArrayLike, targets: ArrayLike) -> float:
    """Single-label accuracy; ``targets`` are class indices ``[N]`` or (soft) one-hot ``[N, C]``."""
    scores = torch.as_tensor(scores)
    targets = torch.as_tensor(targets, device=scores.device)
    labels = targets.argmax(dim=1) if targets.dim() == 2 else targets.long()
    if labels.numel() == 0:
        return float("nan")
    return float((scores.argmax(dim=1) == labels).float().mean())
