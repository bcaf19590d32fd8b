"""Does this CPU compute what a bundle's INT8 model means?

A static QDQ model with uint8 activations and int8 weights runs on the CPU as integer
convolutions. With VNNI (AVX-512 VNNI, AVX-VNNI) the products add up in 32 bits. Without it
(AVX2 machines, AVX-512 before Cascade Lake) onnxruntime multiplies uint8 by int8 with an
instruction that adds pairs of products into 16 bits, and full-range weights (-127..127) against
bright activations overflow it: the model then reads crops wrong on that CPU only, while the gate,
measured on the machine that quantized it, said all was well. Measured on an AMD EPYC with AVX2
only, full-range INT8 models against the same graph computed in float: 9% of the test suite's
crops read differently; on real crops (pampaj7 alone, five folds) 92.5% read right against
FP32's 94.3%, one fold losing 5.5 points.

Bundles quantized since 7-bit weights became the default (``QuantizationConfig.reduce_range``)
cannot overflow (2 x 255 x 64 < 32,767) and are not checked. For an older, full-range bundle the
runtime asks the CPU itself: a single QDQ convolution whose 64 products of 255 x 127 overflow
16 bits by design runs once through onnxruntime's integer kernels and once unoptimized (in
float). A CPU that sums them right serves the INT8 model; one that does not gets FP32 instead,
with a line saying why. Asking the CPU, not the model, is deliberate: a model-level probe (the
bundle's own INT8 on drawn crops) missed a real fold whose reads the overflow had moved.
"""

from __future__ import annotations

import base64
import functools
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .bundle import Bundle

# The probe graph (opset 17, 476 bytes): x [1, 64, 1, 1] -> QuantizeLinear/DequantizeLinear (uint8,
# scale 1) -> Conv with 64 weights of int8 127 (scale 1) -> QuantizeLinear/DequantizeLinear
# (uint8, scale 10,000). tests/test_int8_check.py rebuilds it with onnx's helpers and compares.
PROBE_MODEL = base64.b64decode(
    "CAgSBWthcnlvOsoDCiQKAXgKA29uZQoFenBfdTgSA3hfcSIOUXVhbnRpemVMaW5lYXIKKQoDeF9xCgNvbmUKBXpwX3U4EgR4"
    "X2RxIhBEZXF1YW50aXplTGluZWFyCikKA3dfcQoDb25lCgV6cF9zOBIEd19kcSIQRGVxdWFudGl6ZUxpbmVhcgoVCgR4X2Rx"
    "CgR3X2RxEgF5IgRDb252CioKAXkKCW91dF9zY2FsZQoFenBfdTgSA3lfcSIOUXVhbnRpemVMaW5lYXIKLgoDeV9xCglvdXRf"
    "c2NhbGUKBXpwX3U4EgNvdXQiEERlcXVhbnRpemVMaW5lYXISCnU4czhfcHJvYmUqDRABQgNvbmVKBAAAgD8qDBACQgV6cF91"
    "OEoBACoMEANCBXpwX3M4SgEAKlEIAQhACAEIARADQgN3X3FKQH9/f39/f39/f39/f39/f39/f39/f39/f39/f39/f39/f39/"
    "f39/f39/f39/f39/f39/f39/f39/f39/f39/f38qExABQglvdXRfc2NhbGVKBABAHEZaGwoBeBIWChQIARIQCgIIAQoCCEAK"
    "AggBCgIIAWIdCgNvdXQSFgoUCAESEAoCCAEKAggBCgIIAQoCCAFCBAoAEBE="
)
PROBE_CHANNELS = 64


def full_range_int8(precision_entry: dict[str, Any]) -> bool:
    """True when a manifest's INT8 entry was quantized uint8 x int8 with full-range (8-bit) weights.

    Every INT8 entry karyo's quantizer has written records its `reduce_range`; an entry without
    that record was made some other way and says nothing about its weights, so it is not judged.
    """
    record = precision_entry.get("quantization") or {}
    if "reduce_range" not in record:
        return False
    return (
        not bool(record["reduce_range"])
        and str(record.get("weight_type", "qint8")).lower() == "qint8"
        and str(record.get("activation_type", "quint8")).lower() == "quint8"
    )


def probe_sums(model: bytes = PROBE_MODEL) -> tuple[float, float]:
    """(what the integer kernels compute, what the graph means) for 64 products of 255 x 127."""
    x = np.full((1, PROBE_CHANNELS, 1, 1), 255.0, np.float32)
    results = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = level
        session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        results.append(float(np.asarray(session.run(None, {"x": x})[0]).ravel()[0]))
    return results[0], results[1]


@functools.lru_cache(maxsize=1)
def cpu_overflows_uint8_int8() -> bool:
    """True when this CPU's uint8 x int8 kernels lose products that full-range weights produce."""
    computed, meant = probe_sums()
    return computed < 0.99 * meant


def int8_overflow_message(model_path: str | Path) -> str:
    return (
        f"{model_path}: this CPU adds uint8 x int8 products in 16 bits (no VNNI), which the model's "
        f"full-range int8 weights overflow, so INT8 would misread crops here. Re-quantize the bundle once "
        f"with 7-bit weights: karyo-export quantize BUNDLE --reduce-range"
    )


def int8_overflow(bundle: Bundle, provider: str) -> str | None:
    """The message to give when the bundle's INT8 model would overflow on this CPU, else None.

    Only a full-range bundle on the CPU provider is checked; the CPU is asked once per process
    (two sessions of a one-convolution graph, milliseconds).
    """
    if provider != "cpu" or "int8" not in bundle.manifest.precisions:
        return None
    if not full_range_int8(bundle.manifest.precisions["int8"]) or not cpu_overflows_uint8_int8():
        return None
    return int8_overflow_message(bundle.model_path("int8"))
