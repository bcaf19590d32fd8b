"""Does this CPU compute what a bundle's INT8 model means?

A static QDQ model with uint8 activations and int8 weights runs on the CPU as integer
convolutions. Without VNNI (AVX2 machines, AVX-512 before Cascade Lake) onnxruntime multiplies
uint8 by int8 with an instruction that adds two products into 16 bits, and full-range weights
(-127..127) against bright activations overflow it: the model then reads some crops wrong on that
CPU only, while the gate, measured on the machine that quantized it, said all was well. Measured
on a 4-class test model quantized full range, on an AVX2 CPU: 9% of crops read differently, the
largest probability off by 0.60.

Bundles quantized since 7-bit weights became the default (``QuantizationConfig.reduce_range``)
cannot overflow, and are not checked. For an older, full-range bundle the runtime compares the
INT8 session with onnxruntime running the same graph unoptimized (QuantizeLinear /
DequantizeLinear in float, which is what the graph means) on a few chromosome-like crops drawn
here. On a CPU that computes it right the two agree to rounding; on one that overflows they do
not, and the classifier says so instead of serving wrong reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .bundle import Bundle
from .preprocess import PreprocessSpec, preprocess_gray

# Largest probability difference accepted between the integer kernels and the graph's meaning.
# Where the kernels are exact the difference is requantization rounding (0.0000 measured on the
# test model with 7-bit weights); an overflow moved a probability by 0.72 on the same probe.
KERNEL_TOLERANCE = 0.05
PROBE_CROPS = 16


def full_range_int8(precision_entry: dict[str, Any]) -> bool:
    """True when a manifest's INT8 entry was quantized uint8 x int8 with full-range (8-bit) weights."""
    record = precision_entry.get("quantization") or {}
    return (
        not bool(record.get("reduce_range", False))
        and str(record.get("weight_type", "qint8")).lower() == "qint8"
        and str(record.get("activation_type", "quint8")).lower() == "quint8"
    )


def probe_crops(spec: PreprocessSpec, count: int = PROBE_CROPS, seed: int = 0) -> np.ndarray:
    """Model inputs of banded rods on pale paper, through the bundle's own preprocessing.

    Uniform noise does not do: it leaves the activations too dim to overflow anything (measured:
    no difference at all on the model that 16 rods moved by 0.72).
    """
    rng = np.random.default_rng(seed)
    tensors = []
    for _ in range(count):
        length = int(rng.integers(40, 120))
        width = max(8, length // 5)
        paper = float(rng.uniform(225, 245))
        image = np.full((length + 20, width + 16), paper, np.float32)
        body = float(rng.uniform(120, 200))
        image[10 : 10 + length, 8 : 8 + width] = body
        row = 10
        while row < 10 + length:
            band = int(rng.integers(2, 8))
            image[row : row + band, 8 : 8 + width] = rng.uniform(30, body)
            row += band + int(rng.integers(2, 10))
        image += rng.normal(0, 4, image.shape).astype(np.float32)
        tensors.append(preprocess_gray(np.clip(image, 0, 255), spec))
    return np.stack(tensors).astype(np.float32)


def kernel_error(session: ort.InferenceSession, model_path: str | Path, tensors: np.ndarray) -> float:
    """Largest probability difference between `session` and the same model run unoptimized."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    reference = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    fast = np.asarray(session.run(None, {name: tensors})[0], dtype=np.float64)
    meant = np.asarray(reference.run(None, {reference.get_inputs()[0].name: tensors})[0], dtype=np.float64)
    return float(np.abs(fast - meant).max())


def int8_overflow_message(model_path: str | Path, error: float) -> str:
    return (
        f"{model_path}: this CPU's INT8 arithmetic overflows on the model's full-range weights (a CPU "
        f"without VNNI; probabilities off by up to {error:.2f} on test crops), so INT8 would misread "
        f"crops here. Re-quantize the bundle once with 7-bit weights: karyo-export quantize BUNDLE "
        f"--reduce-range"
    )


def int8_overflow(bundle: Bundle, session: ort.InferenceSession, provider: str) -> str | None:
    """The message to give when `session` (the bundle's INT8 model) overflows on this CPU, else None.

    Only a full-range bundle on the CPU provider is probed; the probe costs one unoptimized session
    and 16 crops, once per opened model.
    """
    if provider != "cpu" or "int8" not in bundle.manifest.precisions:
        return None
    if not full_range_int8(bundle.manifest.precisions["int8"]):
        return None
    path = bundle.model_path("int8")
    error = kernel_error(session, path, probe_crops(bundle.spec))
    return int8_overflow_message(path, error) if error > KERNEL_TOLERANCE else None
