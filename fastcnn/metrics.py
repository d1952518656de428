"""Classification metrics with scikit-learn's definitions.

``accuracy``, ``precision``, ``recall``, ``f1`` (per class with ``average=None``,
or ``'macro'``, ``'micro'``, ``'weighted'``, ``'binary'``), ``confusion_matrix``
and ``classification_report`` give the same numbers as their
``sklearn.metrics`` counterparts on the same inputs. ``y_pred`` may be labels
or a 2-D array of scores (logits or probabilities), reduced with ``argmax``.
Where a ratio is undefined (no predicted or no true sample of a class), the
value is ``zero_division`` (0.0 by default, as scikit-learn's default without
its warning; 1.0 and ``nan`` are accepted too).
"""
import math

import numpy as np

__all__ = [
    "accuracy", "accuracy_score", "precision", "recall", "f1", "f1_score",
    "precision_score", "recall_score", "precision_recall_fscore_support",
    "confusion_matrix", "classification_report",
]

_AVERAGES = (None, "binary", "micro", "macro", "weighted")


def _labels_1d(y, name):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of labels, got shape {y.shape}")
    if y.dtype.kind not in "biuUSO" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        raise ValueError(f"{name} must hold class labels (integers or strings), got non-integral {y.dtype}")
    return y


def _targets(y_true, y_pred):
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 2 and y_pred.shape[1] > 1 and y_true.ndim == 1:
        y_pred = np.argmax(y_pred, axis=1)
    y_true = _labels_1d(y_true, "y_true")
    y_pred = _labels_1d(y_pred, "y_pred")
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred have different lengths: {len(y_true)} and {len(y_pred)}")
    return y_true, y_pred


def _check_zero_division(zero_division):
    if isinstance(zero_division, str) and zero_division == "warn":
        return 0.0
    if isinstance(zero_division, (int, float)) and not isinstance(zero_division, bool):
        if zero_division in (0, 1) or math.isnan(zero_division):
            return float(zero_division)
    raise ValueError(f"zero_division must be 0.0, 1.0, nan or 'warn', got {zero_division!r}")


def accuracy(y_true, y_pred, normalize=True):
    """Fraction (or with ``normalize=False`` the number) of correct predictions."""
    y_true, y_pred = _targets(y_true, y_pred)
    correct = int(np.count_nonzero(y_true == y_pred))
    if not normalize:
        return correct
    return correct / len(y_true) if len(y_true) else 0.0


accuracy_score = accuracy


def confusion_matrix(y_true, y_pred, labels=None, normalize=None):
    """``C[i, j]``: samples of true class ``labels[i]`` predicted as ``labels[j]`` (int64).

    ``labels`` defaults to the sorted union of both label sets; ``normalize``
    is None, ``'true'`` (rows sum to 1), ``'pred'`` (columns) or ``'all'``.
    """
    y_true, y_pred = _targets(y_true, y_pred)
    if normalize not in (None, "true", "pred", "all"):
        raise ValueError(f"normalize must be None, 'true', 'pred' or 'all', got {normalize!r}")
    labels = np.union1d(y_true, y_pred) if labels is None else np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError("labels must be a non-empty 1-D list of class labels")
    if len(np.unique(labels)) != len(labels):
        raise ValueError("labels must not contain duplicates")
    if not np.isin(labels, y_true).any():   # (as scikit-learn: a matrix of no true class is refused)
        raise ValueError(f"At least one label specified must be in y_true: labels {labels.tolist()}, none of "
                         f"which is a true label")
    n = len(labels)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]

    def index(y):
        pos = np.searchsorted(sorted_labels, y)
        pos = np.minimum(pos, n - 1)
        found = sorted_labels[pos] == y
        return np.where(found, order[pos], -1)

    ti, pi = index(y_true), index(y_pred)
    keep = (ti >= 0) & (pi >= 0)
    cm = np.bincount(ti[keep] * n + pi[keep], minlength=n * n).reshape(n, n).astype(np.int64)
    if normalize is None:
        return cm
    with np.errstate(divide="ignore", invalid="ignore"):
        if normalize == "true":
            out = cm / cm.sum(axis=1, keepdims=True)
        elif normalize == "pred":
            out = cm / cm.sum(axis=0, keepdims=True)
        else:
            out = cm / cm.sum()
    return np.nan_to_num(out)


def _divide(num, den, zero_division):
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    mask = den == 0
    out = num / np.where(mask, 1.0, den)
    out[mask] = zero_division
    return out


def _nanaverage(a, weights=None):
    if a.shape[0] == 0:
        return float("nan")
    mask = np.isnan(a)
    if mask.all():
        return float("nan")
    if weights is None:
        return float(np.nanmean(a))
    a, weights = a[~mask], np.asarray(weights, dtype=np.float64)[~mask]
    if weights.sum() == 0:
        return float(np.average(a))
    return float(np.average(a, weights=weights))


def precision_recall_fscore_support(y_true, y_pred, labels=None, average=None, pos_label=1,
                                    beta=1.0, zero_division=0.0):
    """``(precision, recall, f_beta, support)``, as ``sklearn.metrics.precision_recall_fscore_support``.

    Per-class arrays (in the order of ``labels``, default the sorted union of
    the labels) with ``average=None``; floats (and ``support=None``) otherwise.
    """
    y_true, y_pred = _targets(y_true, y_pred)
    if average not in _AVERAGES:
        raise ValueError(f"average must be one of {_AVERAGES}, got {average!r}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
        raise ValueError(f"beta must be a float >= 0, got {beta!r}")
    zd = _check_zero_division(zero_division)
    present = np.union1d(y_true, y_pred)
    if average == "binary":
        if len(present) > 2:
            raise ValueError(f"average='binary' needs at most two classes, got {len(present)}: "
                             "choose average=None, 'micro', 'macro' or 'weighted'")
        if pos_label not in present and len(present) >= 2:
            raise ValueError(f"pos_label={pos_label!r} is not a valid label: it should be one of "
                             f"{present.tolist()}")
        labels = np.asarray([pos_label])
    elif labels is None:
        labels = present
    else:
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.size == 0:
            raise ValueError("labels must be a non-empty 1-D list of class labels")
    # one-vs-rest counts over the union of labels, then restricted to `labels`
    union = np.union1d(present, labels)
    cm = confusion_matrix(y_true, y_pred, labels=union)
    pos = np.searchsorted(union, labels)
    tp = np.diag(cm)[pos].astype(np.int64)
    pred = cm.sum(axis=0)[pos]
    true = cm.sum(axis=1)[pos]
    support = true
    if average == "micro":
        tp, pred, true = tp.sum(keepdims=True), pred.sum(keepdims=True), true.sum(keepdims=True)
    p = _divide(tp, pred, zd)
    r = _divide(tp, true, zd)
    if math.isinf(beta):
        f = r
    elif beta == 0:
        f = p
    else:
        b2 = beta * beta
        f = _divide((1 + b2) * tp.astype(np.float64), b2 * true.astype(np.float64) + pred, zd)
    if average is None:
        return p, r, f, support
    weights = support if average == "weighted" else None
    return _nanaverage(p, weights), _nanaverage(r, weights), _nanaverage(f, weights), None


def precision(y_true, y_pred, average="macro", labels=None, pos_label=1, zero_division=0.0):
    """Precision ``tp / (tp + fp)``; per class with ``average=None``."""
    return precision_recall_fscore_support(y_true, y_pred, labels, average, pos_label,
                                           zero_division=zero_division)[0]


def recall(y_true, y_pred, average="macro", labels=None, pos_label=1, zero_division=0.0):
    """Recall ``tp / (tp + fn)``; per class with ``average=None``."""
    return precision_recall_fscore_support(y_true, y_pred, labels, average, pos_label,
                                           zero_division=zero_division)[1]


def f1(y_true, y_pred, average="macro", labels=None, pos_label=1, zero_division=0.0):
    """F1 ``2 tp / (2 tp + fp + fn)``; per class with ``average=None``."""
    return precision_recall_fscore_support(y_true, y_pred, labels, average, pos_label,
                                           zero_division=zero_division)[2]


precision_score, recall_score, f1_score = precision, recall, f1


def classification_report(y_true, y_pred, labels=None, target_names=None, digits=2,
                          output_dict=False, zero_division=0.0):
    """scikit-learn's text table (or dict) of per-class precision, recall, F1 and support."""
    y_true, y_pred = _targets(y_true, y_pred)
    present = np.union1d(y_true, y_pred)
    labels_given = labels is not None
    labels = present if labels is None else np.asarray(labels)
    micro_is_accuracy = not labels_given or set(labels.tolist()) >= set(present.tolist())
    if target_names is not None and len(labels) != len(target_names):
        raise ValueError(f"{len(labels)} classes but {len(target_names)} target_names; "
                         "give the labels parameter to choose the classes")
    if target_names is None:
        target_names = ["%s" % lab for lab in labels]
    headers = ["precision", "recall", "f1-score", "support"]
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                 zero_division=zero_division)
    rows = list(zip(target_names, p, r, f, s))
    if output_dict:
        report = {name: dict(zip(headers, [float(v) for v in row])) for name, *row in rows}
    else:
        width = max(max(len(cn) for cn in target_names), len("weighted avg"), digits)
        head_fmt = "{:>{width}s} " + " {:>9}" * len(headers)
        text = head_fmt.format("", *headers, width=width) + "\n\n"
        row_fmt = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
        for row in rows:
            text += row_fmt.format(*row, width=width, digits=digits)
        text += "\n"
    for average in ("micro", "macro", "weighted"):
        heading = "accuracy" if average == "micro" and micro_is_accuracy else average + " avg"
        ap, ar, af, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average,
                                                        zero_division=zero_division)
        avg = [ap, ar, af, int(np.sum(s))]
        if output_dict:
            report[heading] = dict(zip(headers, [float(v) for v in avg]))
        elif heading == "accuracy":
            fmt = "{:>{width}s} " + " {:>9.{digits}}" * 2 + " {:>9.{digits}f}" + " {:>9}\n"
            text += fmt.format(heading, "", "", *avg[2:], width=width, digits=digits)
        else:
            text += row_fmt.format(heading, *avg, width=width, digits=digits)
    if output_dict:
        if "accuracy" in report:
            report["accuracy"] = report["accuracy"]["precision"]
        return report
    return text


# ---------------------------------------------------------------------------
# Frechet Inception-style distance (FID) on features of a fastcnn classifier
# ---------------------------------------------------------------------------

def _sqrtm_psd(s):
    """Square root of a symmetric positive semi-definite matrix by eigh (negative eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _feature_stats(f, name):
    f = np.asarray(f)
    if f.ndim != 2:
        raise ValueError(f"{name} must have shape (n_samples, n_features), got {f.shape}")
    if f.shape[0] < 2:
        raise ValueError(f"{name} must hold at least 2 samples, got {f.shape[0]}")
    f = f.astype(np.float64)
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Frechet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))`` where the trace of
    the square root is computed as ``tr((S1^(1/2) S2 S1^(1/2))^(1/2))``, a
    symmetric positive semi-definite matrix, through two symmetric
    eigendecompositions: real, and stable for rank-deficient covariances.
    """
    mu1 = np.asarray(mu1, dtype=np.float64)
    mu2 = np.asarray(mu2, dtype=np.float64)
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mean/covariance shapes disagree: mu1 {mu1.shape}, mu2 {mu2.shape}, "
                         f"sigma1 {s1.shape}, sigma2 {s2.shape}")
    s1 = 0.5 * (s1 + s1.T)
    s2 = 0.5 * (s2 + s2.T)
    r1 = _sqrtm_psd(s1)
    m = r1 @ s2 @ r1
    ev = np.linalg.eigvalsh(0.5 * (m + m.T))
    tr_covmean = float(np.sqrt(np.clip(ev, 0.0, None)).sum())
    diff = mu1 - mu2
    d = float(diff @ diff) + float(np.trace(s1)) + float(np.trace(s2)) - 2.0 * tr_covmean
    return max(d, 0.0)


def fid(features_a, features_b):
    """Frechet distance between two feature sets (n_a, d) and (n_b, d), numpy only."""
    mu1, s1 = _feature_stats(features_a, "features_a")
    mu2, s2 = _feature_stats(features_b, "features_b")
    if mu1.shape != mu2.shape:
        raise ValueError(f"features_a and features_b must have the same number of features, "
                         f"got {mu1.size} and {mu2.size}")
    return frechet_distance(mu1, s1, mu2, s2)


def feature_extractor(model):
    """The callable ``x -> features`` that :func:`fid_score` uses for ``model``.

    A ``Sequential`` classifier is run up to (not including) its last
    ``Linear`` layer: its penultimate-layer features. Any other callable
    mapping images to (N, d) arrays is used as is.
    """
    from .nn import Linear, Sequential
    if isinstance(model, Sequential):
        layers = list(model)
        idx = [i for i, m in enumerate(layers) if isinstance(m, Linear)]
        if not idx or idx[-1] == 0:
            raise ValueError("feature_model: a Sequential needs layers before its last Linear to give features")
        return Sequential(*layers[:idx[-1]])
    if not callable(model):
        raise TypeError(f"feature_model must be a fastcnn Sequential classifier or a callable, got {type(model).__name__}")
    return model


def compute_features(feature_model, images, batch_size=256):
    """Penultimate-layer features of ``images`` (N, C, H, W), in eval mode, in batches; (N, d) float64."""
    x = np.asarray(images)
    if x.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {x.shape}")
    f = feature_extractor(feature_model)
    modules = [m for m in (feature_model, f) if hasattr(m, "eval") and hasattr(m, "training")]
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        out = [np.asarray(f(x[i:i + batch_size])).reshape(min(batch_size, len(x) - i), -1)
               for i in range(0, len(x), batch_size)]
    finally:
        for m, t in zip(modules, was_training):
            m.train(t)
    return np.concatenate(out).astype(np.float64)


def fid_score(images_a, images_b, feature_model, batch_size=256):
    """FID between two image sets using ``feature_model``'s penultimate-layer features.

    ``feature_model`` is a classifier trained by fastcnn on the same kind of
    images (see :func:`feature_extractor`); both image sets must be in the
    range the classifier was trained on.
    """
    return fid(compute_features(feature_model, images_a, batch_size),
               compute_features(feature_model, images_b, batch_size))


__all__ += ["fid", "fid_score", "frechet_distance", "feature_extractor", "compute_features"]
