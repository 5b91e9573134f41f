"""Evaluation metrics: mAP/ROC-AUC per class, undefined classes left out; accuracy."""

import math

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


def test_perfect_scores_give_one():
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float32)
    m = multilabel_metrics(targets * 0.8 + 0.1, targets)
    assert m["mAP"] == pytest.approx(1.0) and m["roc_auc"] == pytest.approx(1.0)


def test_classes_without_positives_are_left_out_not_zero():
    scores, targets = _data()
    targets[:, 2] = 0  # class 2 never occurs in this evaluation set
    ap = average_precision_per_class(scores, targets)
    assert math.isnan(ap[2]) and not np.isnan(np.delete(ap, 2)).any()
    m = multilabel_metrics(scores, targets)
    assert m["mAP"] == pytest.approx(np.mean(np.delete(ap, 2)))
    assert m["classes_scored"] == 4
    targets[:, 3] = 1  # no negatives: ROC-AUC undefined, AP defined
    assert math.isnan(roc_auc_per_class(scores, targets)[3])
    assert average_precision_per_class(scores, targets)[3] == pytest.approx(1.0)


def test_no_positives_at_all_gives_nan_not_an_error():
    m = multilabel_metrics(np.random.rand(4, 3), np.zeros((4, 3)))
    assert math.isnan(m["mAP"]) and m["classes_scored"] == 0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="examples, classes"):
        multilabel_metrics(np.zeros((4, 3)), np.zeros((4, 2)))


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
