"""Classification metrics against scikit-learn."""
import warnings

import numpy as np
import pytest

from fastcnn import metrics

skm = pytest.importorskip("sklearn.metrics")


def _cases():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 5, 200))
    yield "multiclass", y, p
    # class 4 never predicted, class 5 only predicted: zero divisions both ways
    y2 = np.array([0, 1, 2, 4, 4, 1, 0, 2, 2, 3])
    p2 = np.array([0, 2, 2, 1, 5, 1, 0, 5, 2, 3])
    yield "zero-division", y2, p2
    yield "binary", rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    yield "strings", np.array(["cat", "dog", "cat", "bird", "dog"]), np.array(["cat", "cat", "cat", "dog", "dog"])
    yield "single-class", np.zeros(6, int), np.zeros(6, int)


CASES = list(_cases())
IDS = [c[0] for c in CASES]


def _sk(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


@pytest.mark.parametrize("name,y,p", CASES, ids=IDS)
@pytest.mark.parametrize("average", [None, "micro", "macro", "weighted"])
@pytest.mark.parametrize("zero_division", [0.0, 1.0, np.nan], ids=["zd0", "zd1", "zdnan"])
def test_prf_matches_sklearn(name, y, p, average, zero_division):
    for ours, theirs in [(metrics.precision, skm.precision_score), (metrics.recall, skm.recall_score),
                         (metrics.f1, skm.f1_score)]:
        a = ours(y, p, average=average, zero_division=zero_division)
        b = _sk(theirs, y, p, average=average, zero_division=zero_division)
        np.testing.assert_allclose(a, b, rtol=1e-15, atol=0, equal_nan=True, err_msg=ours.__name__)
    a = metrics.precision_recall_fscore_support(y, p, average=average, zero_division=zero_division)
    b = _sk(skm.precision_recall_fscore_support, y, p, average=average, zero_division=zero_division)
    for u, v in zip(a, b):
        if v is None:
            assert u is None
        else:
            np.testing.assert_allclose(u, v, rtol=1e-15, equal_nan=True)


@pytest.mark.parametrize("name,y,p", CASES, ids=IDS)
def test_accuracy_confusion_report_match_sklearn(name, y, p):
    assert metrics.accuracy(y, p) == skm.accuracy_score(y, p)
    assert metrics.accuracy(y, p, normalize=False) == skm.accuracy_score(y, p, normalize=False)
    np.testing.assert_array_equal(metrics.confusion_matrix(y, p), _sk(skm.confusion_matrix, y, p))
    for norm in ("true", "pred", "all"):
        np.testing.assert_allclose(metrics.confusion_matrix(y, p, normalize=norm),
                                   _sk(skm.confusion_matrix, y, p, normalize=norm), rtol=1e-15)
    for digits in (2, 4):
        assert metrics.classification_report(y, p, digits=digits) == \
            _sk(skm.classification_report, y, p, digits=digits, zero_division=0.0)
    assert metrics.classification_report(y, p, output_dict=True) == \
        _sk(skm.classification_report, y, p, output_dict=True, zero_division=0.0)


def test_labels_subset_and_binary():
    y, p = CASES[0][1], CASES[0][2]
    for average in (None, "micro", "macro", "weighted"):
        np.testing.assert_allclose(metrics.f1(y, p, labels=[3, 1, 7], average=average),
                                   _sk(skm.f1_score, y, p, labels=[3, 1, 7], average=average), rtol=1e-15)
    np.testing.assert_array_equal(metrics.confusion_matrix(y, p, labels=[4, 0, 9]),
                                  skm.confusion_matrix(y, p, labels=[4, 0, 9]))
    assert metrics.classification_report(y, p, labels=[0, 1, 2], target_names=["a", "b", "c"]) == \
        skm.classification_report(y, p, labels=[0, 1, 2], target_names=["a", "b", "c"])
    yb, pb = CASES[2][1], CASES[2][2]
    for pos in (0, 1):
        for ours, theirs in [(metrics.precision, skm.precision_score), (metrics.recall, skm.recall_score),
                             (metrics.f1, skm.f1_score)]:
            assert ours(yb, pb, average="binary", pos_label=pos) == theirs(yb, pb, pos_label=pos)


def test_scores_are_reduced_with_argmax():
    logits = np.array([[0.1, 2.0, 0.3], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    y = np.array([1, 0, 1, 1])
    assert metrics.accuracy(y, logits) == 0.75
    np.testing.assert_array_equal(metrics.confusion_matrix(y, logits), [[1, 0, 0], [0, 2, 1], [0, 0, 0]])


def test_bad_input():
    with pytest.raises(ValueError, match="lengths"):
        metrics.accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="average"):
        metrics.f1([0, 1], [0, 1], average="samples")
    with pytest.raises(ValueError, match="binary"):
        metrics.f1([0, 1, 2], [0, 1, 2], average="binary")
    with pytest.raises(ValueError, match="zero_division"):
        metrics.precision([0, 1], [0, 1], zero_division=2)
    with pytest.raises(ValueError, match="y_true"):
        metrics.accuracy(np.zeros((2, 2, 2)), [0, 1])
    with pytest.raises(ValueError, match="non-integral"):
        metrics.accuracy([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="normalize"):
        metrics.confusion_matrix([0, 1], [0, 1], normalize="rows")
    for labels in ([2], [2, 5]):   # no true class among the labels: refused, as scikit-learn
        with pytest.raises(ValueError, match="At least one label specified must be in y_true"):
            skm.confusion_matrix([0, 1], [2, 1], labels=labels)
        with pytest.raises(ValueError, match="At least one label specified must be in y_true"):
            metrics.confusion_matrix([0, 1], [2, 1], labels=labels)
    with pytest.raises(ValueError, match="target_names"):
        metrics.classification_report([0, 1], [0, 1], target_names=["a"])
