"""The TensorFlow side of the benchmark: the study's Keras path, and the bundles made from it.

Kept apart from `run.py` so the history, plotting and ONNX pieces import without TensorFlow
(tests/test_bench.py runs them on tiny ONNX models).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from karyo.runtime.bench import library_versions
from karyo.runtime.dataset import Sample

REPO = Path(__file__).resolve().parents[1]


EXPORT_MEMORY_GB = {"seed-dcnn": 13.0}  # measured: tf2onnx (large-model mode) peaks near 11.5 GB on its 82M-parameter graph


def available_memory_gb() -> float | None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / (1024 * 1024)
    return None


def keras_model(arch: str, size: tuple[int, int], threads: int, train_on: list[Sample], epochs: int, spec: Any):
    """Build the arch; `edge` is trained briefly with the project's own `fit_model`, so its synthetic
    drift figures come from a model that answers something (seed-dcnn stays untrained: latency only)."""
    from karyo.export.models import build_model, configure_tensorflow
    from karyo.runtime.labels import scheme

    configure_tensorflow(threads)
    labels = scheme("normal24")
    usable = [s for s in train_on if s.label in labels]
    if epochs > 0 and usable:
        from karyo.export.data import storage_dtype
        from karyo.runtime.tensors import load_labeled_tensors
        from karyo.export.train import fit_model

        train = load_labeled_tensors(usable, spec, labels, progress=False, dtype=storage_dtype(spec))
        model, _ = fit_model(train, None, arch, labels, spec, epochs, batch_size=32, augment=None, verbose=0)
        return model, labels
    return build_model(arch, len(labels), size), labels


def make_bundle(model, arch: str, labels, spec, out: Path, calibration: list[Sample], quick: bool) -> Path:
    """FP32 ONNX plus FP16 and INT8 through the project's own calibration; the INT8 gate is opened,
    since an untrained model's INT8 agreement says nothing and the bundle only serves timing."""
    from karyo.calibration import GateConfig, QuantizationConfig, add_low_precisions
    from karyo.export.onnx_export import keras_to_onnx
    from karyo.runtime.bundle import Manifest, staged_folder, write_manifest

    config = QuantizationConfig(
        calibration_size=64 if quick else 200, remedies=False, measure_latency=False,
        gate=GateConfig(min_agreement=0.0, max_accuracy_drop=1.0),
    )
    with staged_folder(out) as stage:
        keras_to_onnx(model, stage / "model.fp32.onnx")
        manifest = Manifest(
            labels=labels, preprocess=spec, precisions={"fp32": {"file": "model.fp32.onnx", "metrics": {}}},
            provenance={"arch": arch, "producer": "benchmarks/run.py", "note": "benchmark model, not for use"},
        )
        evaluation = calibration[: 64 if quick else 200]
        add_low_precisions(stage, manifest, calibration, evaluation, config=config, progress=False)
        write_manifest(stage, manifest)
    return out


# The files whose code decides what an exported graph looks like (a change here re-exports).
GRAPH_SOURCES = ("export/models.py", "export/onnx_export.py", "calibration/fp16.py", "calibration/int8.py", "calibration/config.py")


def export_fingerprint() -> str:
    """Hash of the code and library versions that shape an exported graph: a cached bundle is reused
    only when neither changed (the untrained weights themselves do not affect latency)."""
    import hashlib

    digest = hashlib.sha256()
    for relative in GRAPH_SOURCES:
        path = REPO / relative
        digest.update(path.read_bytes() if path.is_file() else b"-")
    versions = library_versions()
    for package in ("tensorflow", "tf2onnx", "onnx", "onnxconverter-common"):
        try:
            from importlib.metadata import version

            versions[package] = version(package)
        except Exception:  # noqa: BLE001
            versions[package] = "?"
    digest.update(json.dumps(versions, sort_keys=True).encode())
    return digest.hexdigest()[:12]


def count_macs_keras(model) -> int:
    """MACs per image from the Keras layers (conv = H_out*W_out*K*K*Cin/groups*Cout, dense = in*out),
    for when no ONNX graph could be made; agrees with the ONNX count for these architectures."""
    from keras import layers

    total = 0
    for layer in model.layers:
        out = getattr(layer, "output", None)
        shape = tuple(out.shape) if out is not None else ()
        if isinstance(layer, layers.DepthwiseConv2D):
            kh, kw, cin, mult = layer.kernel.shape  # Keras 3: (kh, kw, in, multiplier)
            total += shape[1] * shape[2] * kh * kw * cin * mult
        elif isinstance(layer, layers.Conv2D):
            kh, kw, cin_per_group, cout = layer.kernel.shape
            total += shape[1] * shape[2] * kh * kw * cin_per_group * cout
        elif isinstance(layer, layers.Dense):
            fan_in, units = layer.kernel.shape
            rows = int(__import__("numpy").prod(shape[1:-1])) if len(shape) > 2 else 1
            total += rows * fan_in * units
    return int(total)


def keras_latency(model, arch: str, size: tuple[int, int], batch_sizes, iterations: int, max_seconds: float) -> list[dict[str, Any]]:
    """The study's path: `model.predict` (what its notebook times) and the bare `model(x)` call."""
    import numpy as np
    import tensorflow as tf

    from karyo.runtime.bench import latency_summary, time_calls

    rng = np.random.default_rng(0)
    rows = []
    for batch_size in batch_sizes:
        x = rng.random((batch_size, *size, 1), dtype=np.float32)
        tensor = tf.constant(x)
        calls = {
            "keras-predict": lambda: model.predict(x, batch_size=batch_size, verbose=0),
            "keras-call": lambda: model(tensor, training=False).numpy(),
        }
        for name, call in calls.items():
            summary = latency_summary(time_calls(call, iterations, 2, max_seconds), batch_size)
            rows.append({"arch": arch, "engine": "keras", "precision": name, "provider": "tensorflow-cpu", **summary})
    return rows
