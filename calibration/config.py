"""Quantization settings, stored in the bundle manifest so an INT8 model can be reproduced.

The shape follows optimum-onnx's split (a quantization config plus a calibration config, both plain
JSON); karyo keeps them in one object because a bundle is quantized one way at a time, and adds
the acceptance gate, since an INT8 model that drifts from FP32 must never be shipped silently.
Defaults come from measurements on this project's AVX-512 VNNI CPU (onnxruntime 1.31), on an
`edge` model (64 px, 88.9% on 942 held-out pampaj7 crops) and the seed DCNN at 96 px (82.0%):
- static QDQ with per-channel signed weights: seed DCNN 10-11 ms -> 0.8-1.2 ms per crop, edge
  0.6-0.8 -> 0.36-0.45 ms; agreement with FP32 99.15% (edge) and 99.58% (DCNN).
- unsigned vs signed 8-bit activations: identical drift (asymmetric ranges give the same grid)
  and no latency difference beyond noise; quint8 is onnxruntime's documented x86 VNNI choice.
- MinMax vs Entropy vs Percentile: Entropy chose the same ranges as MinMax on both models at twice
  the time; Percentile lost more accuracy on edge (0.42 vs 0.21 points). MinMax first, the
  others as remedies.
- calibration size: 24 -> 98.3-98.4% agreement, 100-200 -> 98.9-99.3%, 400-800 no better
  (97.7-99.3%, seed to seed); 200 crops, about 8 per class for 24 classes.
- softmax left in float: mean KL to FP32 0.051 -> 0.0016 on edge, same agreement and speed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from karyo.runtime.metrics import TIE_MARGIN

METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")
INT8_TYPES: tuple[str, ...] = ("qint8", "quint8")


@dataclass
class GateConfig:
    """What an INT8 model must keep, measured against FP32 on the evaluation set.

    Agreement is gated over the crops FP32 reads decisively, its top class ahead of the runner-up
    by at least `tie_margin` (`karyo.runtime.metrics.TIE_MARGIN`); the agreement over all crops is
    still measured and recorded. A model trained on a small lab's few patients reads more crops as
    near-ties, and those tip under any rounding: on a pampaj7-only fold (89.9% FP32 on 565 crops)
    every INT8 attempt changed 6 or 7 answers, more often to the true class than away from it, and
    an all-crop gate at 99% refused them all (benchmarks/ACCURACY.md, Quantization).
    `tie_margin=0` gates on every crop.

    The accuracy drop is counted over every crop, ties included, and on a small evaluation set a
    few coin flips cross 0.5 points (3 crops of 594 on another pampaj7-only fold, every changed
    answer a tie). A drop past `max_accuracy_drop` fails only when chance does not explain it: a
    sign test over the answers that changed truth (`right_to_wrong` against `wrong_to_right`, each
    equally likely if INT8 only tips ties) must put it below `drop_significance`. 1 fails every
    such drop; metrics without those counts are gated on the drop alone.
    """

    min_agreement: float = 0.99  # top-1 agreement with FP32 on the crops FP32 reads decisively
    max_accuracy_drop: float = 0.005  # FP32 accuracy minus INT8 accuracy (fraction, 0.005 = 0.5 points)
    tie_margin: float = TIE_MARGIN  # FP32 top-1 minus runner-up probability below which a crop is a tie
    drop_significance: float = 0.05  # a drop past max_accuracy_drop fails when the sign test's p is below this

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"min_agreement must lie in [0, 1], got {self.min_agreement}")
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise ValueError(f"max_accuracy_drop must lie in [0, 1], got {self.max_accuracy_drop}")
        if not 0.0 <= self.tie_margin < 1.0:
            raise ValueError(f"tie_margin must lie in [0, 1), got {self.tie_margin}")
        if not 0.0 < self.drop_significance <= 1.0:
            raise ValueError(f"drop_significance must lie in (0, 1], got {self.drop_significance}")

    def gated_agreement(self, metrics: dict[str, Any]) -> tuple[float, int | None]:
        """(agreement the gate reads, how many crops it counts; None: all). Over the decisive crops
        when they were counted with this gate's margin, else (metrics from elsewhere, a zero
        margin, or every crop a tie) over all crops."""
        decisive = metrics.get("decisive_agreement")
        if (self.tie_margin > 0 and decisive is not None
                and abs(float(metrics.get("tie_margin", -1.0)) - self.tie_margin) < 1e-12):
            return float(decisive), int(metrics["decisive_n"])
        return float(metrics["agreement_with_fp32"]), None

    def check(self, metrics: dict[str, Any]) -> tuple[bool, list[str]]:
        """(passed, reasons it failed) for one precision's drift metrics."""
        reasons: list[str] = []
        agreement, counted = self.gated_agreement(metrics)
        if agreement < self.min_agreement:
            scope = "" if counted is None else f" on the {counted} crops FP32 reads decisively"
            reasons.append(f"top-1 agreement {agreement:.4f} < {self.min_agreement:.4f}{scope}")
        if "accuracy" in metrics and "accuracy_fp32" in metrics:
            drop = float(metrics["accuracy_fp32"]) - float(metrics["accuracy"])
            if drop > self.max_accuracy_drop + 1e-12:
                p = drop_p_value(metrics)
                if p is None or p < self.drop_significance:
                    test = "" if p is None else (
                        f" ({answers_changed(int(metrics['right_to_wrong']), int(metrics['wrong_to_right']))}: "
                        f"sign test p = {p:.3f})"
                    )
                    reasons.append(f"accuracy drop {drop * 100:.2f} points > {self.max_accuracy_drop * 100:.2f}{test}")
        return not reasons, reasons

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GateConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: float(v) for k, v in data.items() if k in known})


def answers_changed(lost: int, gained: int) -> str:
    """'3 right answers lost, 1 gained': how the gate's lines and the attempts name the sign test's counts."""
    return f"{lost} right answer{'' if lost == 1 else 's'} lost, {gained} gained"


def drop_p_value(metrics: dict[str, Any]) -> float | None:
    """One-sided exact sign test: the chance of losing at least this many right answers among the
    ones that changed truth if each change were a fair coin. None without the counts."""
    if "right_to_wrong" not in metrics or "wrong_to_right" not in metrics:
        return None
    lost, gained = int(metrics["right_to_wrong"]), int(metrics["wrong_to_right"])
    changed = lost + gained
    if changed == 0:
        return 1.0
    return sum(math.comb(changed, k) for k in range(lost, changed + 1)) / 2.0**changed


@dataclass
class QuantizationConfig:
    """How the INT8 model is made. Every field is JSON-serializable and lands in the manifest.

    `remedies` lets a failing gate try the other calibration methods, then leave the most
    quantization-sensitive nodes in float: at most `max_excluded_nodes` convolutions/matrix
    products, and at most `max_excluded_fraction` of them (at least one), with the Relu/pooling
    nodes that share their quantized tensors.
    """

    method: str = "minmax"
    per_channel: bool = True
    weight_type: str = "qint8"
    activation_type: str = "quint8"
    # 7-bit weights: without VNNI (AVX2, AVX-512 before Cascade Lake) the uint8 x int8 kernels add
    # two products in 16 bits, which overflow with full-range weights; the INT8 model must stay
    # right on whatever scanner PC it lands on, not only on the CPU that measured the gate
    reduce_range: bool = True
    keep_output_float: bool = True  # leave the softmax in float (probabilities not rounded to 1/255)
    calibration_size: int = 200
    calibration_batch_size: int = 32
    calibration_seed: int = 0
    percentile: float = 99.999
    excluded_nodes: list[str] = field(default_factory=list)
    remedies: bool = True
    max_excluded_nodes: int = 4
    max_excluded_fraction: float = 0.25  # beyond this share of float nodes it is no longer an INT8 model
    measure_latency: bool = True
    gate: GateConfig = field(default_factory=GateConfig)

    def __post_init__(self) -> None:
        if isinstance(self.gate, dict):
            self.gate = GateConfig.from_dict(self.gate)
        self.method = self.method.lower()
        self.weight_type = self.weight_type.lower()
        self.activation_type = self.activation_type.lower()
        if self.method not in METHODS:
            raise ValueError(f"calibration method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name in ("weight_type", "activation_type"):
            if getattr(self, name) not in INT8_TYPES:
                raise ValueError(f"{name} must be one of {', '.join(INT8_TYPES)}, got {getattr(self, name)!r}")
        if self.calibration_size < 1:
            raise ValueError(f"calibration_size must be at least 1, got {self.calibration_size}")
        if self.calibration_batch_size < 1:
            raise ValueError(f"calibration_batch_size must be at least 1, got {self.calibration_batch_size}")
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile must lie in (50, 100], got {self.percentile}")
        if not 0.0 <= self.max_excluded_fraction <= 1.0:
            raise ValueError(f"max_excluded_fraction must lie in [0, 1], got {self.max_excluded_fraction}")
        if self.max_excluded_nodes < 0:
            raise ValueError(f"max_excluded_nodes must be >= 0, got {self.max_excluded_nodes}")
        self.excluded_nodes = [str(n) for n in self.excluded_nodes]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gate"] = self.gate.to_dict()
        data["format"] = "QDQ"
        data["is_static"] = True
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QuantizationConfig":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "gate" in values and isinstance(values["gate"], dict):
            values["gate"] = GateConfig.from_dict(values["gate"])
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "QuantizationConfig":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("quantization config JSON must be an object")
        return cls.from_dict(data)
