"""Drift of FP16/INT8 models from FP32, measured exactly the way `karyo evaluate` re-measures it.

Probabilities come from `karyo.runtime.session.run_probabilities` on a CPU session (batch 64) and
figures from `karyo.runtime.metrics.drift`, on tensors from the runtime's preprocessing. Using
the runtime's own code, not a copy, is what makes the manifest's numbers re-checkable on the
scanner PC to the last digit.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from karyo.runtime.metrics import TIE_MARGIN, drift
from karyo.runtime.orientation import DEFAULT_ORIENTATION, read_oriented
from karyo.runtime.session import ProviderError, create_session, run_probabilities

EVAL_BATCH_SIZE = 64
EVAL_PROVIDER = "cpu"


def probabilities(
    model_path: Path, tensors: np.ndarray, threads: int | None = None, orientation: str = DEFAULT_ORIENTATION
) -> np.ndarray:
    """Probabilities read the way the bundle reads crops (its manifest `orientation`): a bundle
    read both ways by default must have its figures, and its INT8 gate, measured both ways too."""
    session, _ = create_session(model_path, EVAL_PROVIDER, threads=threads)
    probs, _ = read_oriented(lambda x: run_probabilities(session, x, batch_size=EVAL_BATCH_SIZE), tensors, orientation)
    return probs


def drift_metrics(
    probs: np.ndarray,
    reference: np.ndarray,
    y_true: np.ndarray | None,
    labels: Sequence[str],
    tie_margin: float = TIE_MARGIN,
) -> dict[str, Any]:
    return drift(probs, reference, y_true, labels, tie_margin=tie_margin)


def latency_ms(model_path: Path, sample: np.ndarray, runs: int = 20, provider: str = "cpu") -> dict[str, float]:
    """Median milliseconds for one crop (batch 1) and per crop in a batch of up to 64.

    Batch 1 is what an operator clicking one chromosome waits for; the batched figure is what a
    whole metaphase (46 crops) costs per crop.
    """
    try:
        session, provider = create_session(model_path, provider)
    except ProviderError:  # a GPU asked for on a machine without one: time it on the CPU, and say so
        session, provider = create_session(model_path, "cpu")
    single = np.ascontiguousarray(sample[:1], dtype=np.float32)
    batch = np.ascontiguousarray(sample[:EVAL_BATCH_SIZE], dtype=np.float32)
    run_probabilities(session, single)  # warm-up: first run allocates
    run_probabilities(session, batch)
    timings: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        run_probabilities(session, single)
        timings.append(time.perf_counter() - start)
    batched: list[float] = []
    for _ in range(max(3, runs // 5)):
        start = time.perf_counter()
        run_probabilities(session, batch)
        batched.append((time.perf_counter() - start) / len(batch))
    return {
        "batch1_ms": round(float(np.median(timings)) * 1000.0, 3),
        "per_crop_batched_ms": round(float(np.median(batched)) * 1000.0, 3),
        "batch": int(len(batch)),
        "provider": provider,
    }


def format_drift_table(precisions: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table of drift per precision (manifest `precisions` mapping, or name -> metrics).

    Plain text because it is printed to terminals and pasted into validation records.
    """
    header = ["precision", "n", "accuracy", "fp32 acc", "agree", "decisive", "mean KL", "max dp", "flipped", "ms/crop", "status"]
    rows: list[list[str]] = []
    for name, entry in precisions.items():
        metrics = entry.get("metrics", entry) if isinstance(entry, Mapping) else {}
        latency = entry.get("latency", {}) if isinstance(entry, Mapping) else {}
        flipped = metrics.get("flipped") or {}
        flipped_text = ", ".join(f"{label}:{count}" for label, count in list(flipped.items())[:4])
        if len(flipped) > 4:
            flipped_text += ", ..."
        status = entry.get("gate", {}).get("status", "") if isinstance(entry, Mapping) else ""
        rows.append(
            [
                name,
                str(metrics.get("n", "")),
                _pct(metrics.get("accuracy")),
                _pct(metrics.get("accuracy_fp32")),
                _pct(metrics.get("agreement_with_fp32")),
                _decisive(metrics),
                _num(metrics.get("kl_to_fp32"), "{:.2e}"),
                _num(metrics.get("max_prob_diff"), "{:.4f}"),
                flipped_text or ("0" if "flipped" in metrics else ""),
                _num(latency.get("batch1_ms"), "{:.2f}"),
                status,
            ]
        )
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)
    return "\n".join(lines)


def _decisive(metrics: Mapping[str, Any]) -> str:
    """Agreement over the crops FP32 does not read as ties, with how many they are (what the gate reads)."""
    if metrics.get("decisive_agreement") is None:
        return ""
    return f"{_pct(metrics['decisive_agreement'])} of {metrics.get('decisive_n', '?')}"


def _pct(value: Any) -> str:
    return "" if value is None else f"{float(value) * 100:.2f}%"


def _num(value: Any, pattern: str) -> str:
    return "" if value is None else pattern.format(float(value))
