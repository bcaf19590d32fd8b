"""Accuracy and drift figures, computed one way for training reports, export, calibration and `karyo evaluate`.

Keeping one implementation is what lets the manifest's drift figures be re-checked on the scanner
PC and come out equal.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

_EPS = 1e-7
# An FP32 read whose top class leads the runner-up by less than this is a tie: any perturbation of
# the weights (FP16 rounding included) can tip it either way, so a lower precision that reads it
# otherwise says nothing about how well it was quantized. On this project's INT8 bundles every
# flip sat on an FP32 margin below 0.1 (benchmarks/ACCURACY.md, Quantization).
TIE_MARGIN = 0.1


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def classification_report(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """n, accuracy, per-class precision/recall/support and the confusion matrix."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.argmax(probs, axis=1)
    matrix = confusion_matrix(y_true, y_pred, len(labels))
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    diagonal = np.diag(matrix)
    per_class = {}
    for i, label in enumerate(labels):
        per_class[label] = {
            "recall": float(diagonal[i] / support[i]) if support[i] else None,
            "precision": float(diagonal[i] / predicted[i]) if predicted[i] else None,
            "support": int(support[i]),
        }
    n = int(len(y_true))
    return {
        "n": n,
        "accuracy": float(diagonal.sum() / n) if n else 0.0,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "labels": list(labels),
    }


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise KL(p || q) in nats, with probabilities clipped away from zero."""
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0)
    q = np.clip(np.asarray(q, dtype=np.float64), _EPS, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    q = q / q.sum(axis=1, keepdims=True)
    return np.sum(p * (np.log(p) - np.log(q)), axis=1)


def drift(
    probs: np.ndarray,
    reference: np.ndarray,
    y_true: np.ndarray | None,
    labels: Sequence[str],
    tie_margin: float = TIE_MARGIN,
) -> dict[str, Any]:
    """How a lower precision's outputs differ from FP32's on the same inputs.

    `flipped` lists, per true class, how many crops changed their top-1 answer, so a clinic sees
    whether the loss falls on chromosomes it cares about. `decisive_agreement` is the agreement
    over the `decisive_n` crops FP32 does not read as a tie (see `TIE_MARGIN`): a weaker model
    has more ties, and its flips there would otherwise read as quantization damage. None when
    FP32 reads every crop as a tie. `right_to_wrong` and `wrong_to_right` count the changed answers
    that cost or gained a right read: whether a drop is more than chance flips is read from them.
    """
    probs = np.asarray(probs, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if probs.shape != reference.shape:
        raise ValueError(f"shape mismatch {probs.shape} vs {reference.shape}")
    top = probs.argmax(axis=1)
    top_ref = reference.argmax(axis=1)
    changed = top != top_ref
    decisive = tie_margins(reference) >= tie_margin
    result: dict[str, Any] = {
        "n": int(len(probs)),
        "agreement_with_fp32": float(np.mean(~changed)) if len(probs) else 1.0,
        "tie_margin": float(tie_margin),
        "decisive_n": int(decisive.sum()),
        "decisive_agreement": float(np.mean(~changed[decisive])) if decisive.any() else None,
        "kl_to_fp32": float(np.mean(kl_divergence(reference, probs))) if len(probs) else 0.0,
        "max_prob_diff": float(np.max(np.abs(probs - reference))) if len(probs) else 0.0,
    }
    if y_true is not None:
        y_true = np.asarray(y_true, dtype=np.int64)
        result["accuracy"] = float(np.mean(top == y_true)) if len(probs) else 0.0
        result["accuracy_fp32"] = float(np.mean(top_ref == y_true)) if len(probs) else 0.0
        result["right_to_wrong"] = int(np.sum((top_ref == y_true) & (top != y_true)))
        result["wrong_to_right"] = int(np.sum((top_ref != y_true) & (top == y_true)))
        flipped: dict[str, int] = {}
        for index in np.flatnonzero(changed):
            name = labels[int(y_true[index])]
            flipped[name] = flipped.get(name, 0) + 1
        result["flipped"] = dict(sorted(flipped.items(), key=lambda kv: -kv[1]))
    return result


def tie_margins(probs: np.ndarray) -> np.ndarray:
    """Per row, how far the top class's probability leads the runner-up's (1 for a single class)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        return np.ones(len(probs))
    ordered = np.partition(probs, probs.shape[1] - 2, axis=1)
    return ordered[:, -1] - ordered[:, -2]
