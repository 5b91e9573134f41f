"""Evaluation metrics: mAP/ROC-AUC per class equal to scikit-learn (ties, weights), undefined classes left out; accuracy."""

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from helpers.training.metrics import (
    accuracy,
    average_precision_per_class,
    multilabel_metrics,
    roc_auc_per_class,
)
from helpers.training.tasks import MultiClassTask, MultiLabelTask


def _data(seed=0, n=60, c=5):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < 0.3).astype(np.float32)
    scores = rng.random((n, c)) + targets * 0.5
    return scores, targets


def test_map_is_the_mean_of_sklearn_average_precision_per_class():
    scores, targets = _data()
    expected = np.mean([average_precision_score(targets[:, k], scores[:, k]) for k in range(5)])
    assert multilabel_metrics(scores, targets)["mAP"] == pytest.approx(expected)
    assert multilabel_metrics(scores, targets)["roc_auc"] == pytest.approx(
        roc_auc_score(targets, scores, average="macro"))


def _sklearn_per_class(metric, scores, targets, weights=None):
    """scikit-learn's score of every class (NaN where our functions leave the class out)."""
    values = []
    for c in range(targets.shape[1]):
        w = None if weights is None else weights[:, c]
        mass = np.ones(len(targets)) if w is None else w
        positives, negatives = mass[targets[:, c] > 0.5].sum(), mass[targets[:, c] <= 0.5].sum()
        defined = positives > 0 and (metric is average_precision_score or negatives > 0)
        values.append(metric(targets[:, c], scores[:, c], sample_weight=w) if defined else np.nan)
    return np.array(values)


def _tied_data(seed, n=400, c=9, dtype=np.float32):
    """Scores rounded to one decimal (many ties), some saturated at exactly 0 and 1, as sigmoids give."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < 0.2).astype(np.float32)
    scores = np.clip(np.round(rng.random((n, c)) * 1.4 - 0.2 + 0.3 * targets, 1), 0.0, 1.0).astype(dtype)
    return scores, targets


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighting", ["none", "mask", "real"])
def test_per_class_ap_and_roc_auc_equal_sklearn_with_ties_and_weights(dtype, weighting):
    scores, targets = _tied_data(1, dtype=dtype)
    rng = np.random.default_rng(2)
    weights = {"none": None, "mask": (rng.random(scores.shape) < 0.7).astype(np.float32),  # annotated labels
               "real": rng.random(scores.shape) * 3}[weighting]
    targets[:, 0] = 0  # no positives: AP and ROC-AUC undefined
    targets[:, 1] = 1  # no negatives: ROC-AUC undefined
    if weights is not None:
        weights[:, 2] = weights[:, 2] * (targets[:, 2] == 0)  # positives all unannotated: undefined too
    assert len(np.unique(scores[:, 3])) < 20  # the data does have ties
    for ours, metric in ((average_precision_per_class, average_precision_score), (roc_auc_per_class, roc_auc_score)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn warns about the undefined classes we skip
            expected = _sklearn_per_class(metric, scores.astype(np.float64), targets, weights)
        got = ours(torch.from_numpy(scores), torch.from_numpy(targets),
                   None if weights is None else torch.from_numpy(weights)).numpy()
        assert np.array_equal(np.isnan(got), np.isnan(expected)), metric.__name__
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0, equal_nan=True, err_msg=metric.__name__)
    assert math.isnan(average_precision_per_class(scores, targets, weights)[0])


def test_zero_weights_are_the_same_as_leaving_the_examples_out():
    scores, targets = _tied_data(3)
    keep = np.arange(len(scores)) % 3 != 0
    mask = np.repeat(keep[:, None], scores.shape[1], axis=1).astype(np.float32)
    for per_class in (average_precision_per_class, roc_auc_per_class):
        np.testing.assert_allclose(per_class(scores, targets, mask).numpy(),
                                   per_class(scores[keep], targets[keep]).numpy(), atol=1e-12)


def test_half_precision_scores_and_negative_and_signed_zero_scores():
    # logits as scores: negative values order below positive ones, and -0.0 ties with +0.0
    scores = np.array([[-2.0], [-0.0], [0.0], [1.5], [-0.5], [0.0]], dtype=np.float32)
    targets = np.array([[0], [1], [0], [1], [0], [1]], dtype=np.float32)
    for per_class, metric in ((average_precision_per_class, average_precision_score), (roc_auc_per_class, roc_auc_score)):
        expected = metric(targets[:, 0], scores[:, 0].astype(np.float64))
        assert float(per_class(scores, targets)[0]) == pytest.approx(expected, abs=1e-12)
        assert float(per_class(torch.from_numpy(scores).half(), targets)[0]) == pytest.approx(expected, abs=1e-12)


def test_perfect_scores_give_one():
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float32)
    m = multilabel_metrics(targets * 0.8 + 0.1, targets)
    assert m["mAP"] == pytest.approx(1.0) and m["roc_auc"] == pytest.approx(1.0)


def test_classes_without_positives_are_left_out_not_zero():
    scores, targets = _data()
    targets[:, 2] = 0  # class 2 never occurs in this evaluation set
    ap = average_precision_per_class(scores, targets)
    assert isinstance(ap, torch.Tensor) and ap.shape == (5,)
    assert math.isnan(ap[2]) and not ap[[0, 1, 3, 4]].isnan().any()
    m = multilabel_metrics(scores, targets)
    assert m["mAP"] == pytest.approx(float(ap[[0, 1, 3, 4]].mean()))
    assert m["classes_scored"] == 4
    targets[:, 3] = 1  # no negatives: ROC-AUC undefined, AP defined
    assert math.isnan(roc_auc_per_class(scores, targets)[3])
    assert float(average_precision_per_class(scores, targets)[3]) == pytest.approx(1.0)


def test_no_positives_at_all_gives_nan_not_an_error():
    m = multilabel_metrics(np.random.rand(4, 3), np.zeros((4, 3)))
    assert math.isnan(m["mAP"]) and m["classes_scored"] == 0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="examples, classes"):
        multilabel_metrics(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="weights"):
        multilabel_metrics(np.zeros((4, 3)), np.zeros((4, 3)), np.ones((4, 2)))


def test_accuracy_with_indices_and_one_hot():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert accuracy(scores, np.array([0, 1, 1])) == pytest.approx(2 / 3)
    assert accuracy(scores, np.eye(2)[[0, 1, 1]]) == pytest.approx(2 / 3)


def test_tasks_loss_metrics_and_target_checks():
    logits = torch.tensor([[4.0, -4.0], [-4.0, 4.0]])
    ml = MultiLabelTask()
    assert ml.loss(logits, torch.eye(2)) < 0.05
    assert ml.metrics(logits, torch.eye(2))["mAP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n_classes=3"):
        ml.check_targets(torch.zeros(2), 3)
    mc = MultiClassTask()
    assert mc.loss(logits, torch.tensor([0, 1])) < 0.05
    assert mc.loss(logits, torch.eye(2)) == pytest.approx(mc.loss(logits, torch.tensor([0, 1])))
    assert mc.metrics(logits, torch.tensor([0, 0]))["acc"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="outside"):
        mc.check_targets(torch.tensor(5), 2)
