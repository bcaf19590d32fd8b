"""Static INT8 quantization (QDQ) and the search for nodes that quantize badly.

QDQ with per-channel signed 8-bit weights is the format onnxruntime's CPU kernels fuse into
integer convolutions (VNNI on recent x86), and the one TensorRT reads; QOperator and dynamic
quantization were not faster for convolutional models here. When a model loses accuracy the
usual culprit is one or two tensors whose range calibration cannot capture (a wide-tailed
activation, a layer feeding softmax): `rank_sensitive_nodes` finds them by comparing every
activation before and after its quantize/dequantize pair, so they can stay in float.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import onnx
import onnx.numpy_helper
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.qdq_loss_debug import (
    collect_activations,
    compute_signal_to_quantization_noice_ratio,
    create_activation_matching,
    modify_model_output_intermediate_tensors,
)
from onnxruntime.quantization.registry import QDQRegistry
from onnxruntime.quantization.shape_inference import quant_pre_process

from .config import QuantizationConfig
from .data import TensorDataReader

_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
_TYPES = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime's quantizer logs advice at WARNING on every call; it is not the user's business."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # histogram calibrators print to stdout
            yield
    finally:
        root.setLevel(level)


def prepare_for_quantization(fp32_path: Path, out_path: Path) -> tuple[Path, str | None]:
    """Shape inference + graph optimization (onnxruntime's recommended pre-processing step).

    Returns the model to quantize and a note when the full step did not go through. Symbolic shape
    inference gives up on some graphs (the mirror-averaging export is one) and then drops a debug
    model into the current folder; it runs in a scratch folder, and on failure the step is redone
    with ONNX's own shape inference, which is enough for a CNN with a fixed input box. Only if that
    fails too is the FP32 model quantized as is: still valid, just with fewer fused nodes.
    """
    fp32_path, out_path = Path(fp32_path).resolve(), Path(out_path).resolve()
    failures: list[str] = []
    for skip_symbolic in (False, True):
        try:
            with _quiet_quantizer(), _scratch_folder():
                quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=skip_symbolic)
        except Exception as exc:  # noqa: BLE001 - any failure here has a fallback
            failures.append(f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}")
            continue
        return out_path, ("symbolic shape inference skipped: " + failures[0]) if failures else None
    return fp32_path, "quant_pre_process skipped: " + "; ".join(failures)


@contextlib.contextmanager
def _scratch_folder() -> Iterator[None]:
    """Run with a temporary working folder, so tools that write debug files beside the caller do not."""
    previous = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="karyo-quant-") as scratch:
        os.chdir(scratch)
        try:
            yield
        finally:
            os.chdir(previous)


def quantize_int8(
    prepared_path: Path,
    out_path: Path,
    calibration: np.ndarray,
    config: QuantizationConfig,
    method: str | None = None,
    excluded_nodes: Sequence[str] = (),
    input_name: str = "image",
) -> Path:
    """One static QDQ quantization of `prepared_path` into `out_path` with the given method/exclusions."""
    method = method or config.method
    extra: dict[str, Any] = {"WeightSymmetric": True}
    if method == "percentile":
        extra["CalibPercentile"] = float(config.percentile)
    batch_size = config.calibration_batch_size
    if method != "minmax":  # histogram collectors stack batches, so every batch must be the same size
        batch_size = max(d for d in range(1, batch_size + 1) if len(calibration) % d == 0)
    reader = TensorDataReader(calibration, input_name=input_name, batch_size=batch_size)
    excluded = list(excluded_nodes)
    if config.keep_output_float:
        excluded += [n for n in output_nodes(prepared_path) if n not in excluded]
    with _quiet_quantizer():
        quantize_static(
            str(prepared_path),
            str(out_path),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            activation_type=_TYPES[config.activation_type],
            weight_type=_TYPES[config.weight_type],
            nodes_to_exclude=excluded or None,
            calibrate_method=_METHODS[method],
            extra_options=extra,
        )
    return out_path


def output_nodes(model_path: Path) -> list[str]:
    """Nodes that produce a graph output (the softmax).

    onnxruntime's default op list includes Softmax, which would put the probabilities themselves
    through uint8 (steps of 1/255, small classes rounded to exactly 0); the softmax costs nothing
    in float and keeps the probabilities, their KL and the top-k list meaningful.
    """
    model = onnx.load(str(model_path), load_external_data=False)
    outputs = {o.name for o in model.graph.output}
    return [node.name for node in model.graph.node if outputs.intersection(node.output)]


COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def quantizable_nodes(model_path: Path, compute_only: bool = False) -> list[str]:
    """Names of the nodes static QDQ quantization would touch (the candidates for exclusion).

    `compute_only` keeps the convolutions and matrix products: the nodes whose integer kernels
    make INT8 fast, and so the ones an exclusion budget is counted in.
    """
    model = onnx.load(str(model_path), load_external_data=False)
    wanted = COMPUTE_OPS if compute_only else QDQRegistry
    return [node.name for node in model.graph.node if node.op_type in wanted]


def rank_sensitive_nodes(
    prepared_path: Path, qdq_path: Path, tensors: np.ndarray, input_name: str = "image", batch_size: int = 32
) -> list[dict[str, Any]]:
    """Quantized tensors ordered from worst to best signal-to-quantization-noise ratio (dB).

    Each entry names the tensor, its SQNR across the QDQ pair, its SQNR against the FP32 model's
    activation, and the quantizable nodes that produce or consume it: leaving those nodes in float
    removes that tensor's quantization error.
    """
    touching = _nodes_touching_tensors(prepared_path)
    with tempfile.TemporaryDirectory(prefix="karyo-qdq-debug-") as folder:
        float_aug = Path(folder) / "float_aug.onnx"
        qdq_aug = Path(folder) / "qdq_aug.onnx"
        with _quiet_quantizer():
            modify_model_output_intermediate_tensors(str(prepared_path), str(float_aug))
            modify_model_output_intermediate_tensors(str(qdq_path), str(qdq_aug))
            float_acts = collect_activations(str(float_aug), TensorDataReader(tensors, input_name, batch_size))
            qdq_acts = collect_activations(str(qdq_aug), TensorDataReader(tensors, input_name, batch_size))
    matching = create_activation_matching(qdq_acts, float_acts)
    clamps = _clamping_producers(prepared_path)
    ranked = []
    for tensor, match in matching.items():
        nodes = touching.get(tensor, [])
        pre, post = match.get("pre_qdq"), match.get("post_qdq")
        if not nodes or pre is None or post is None:
            continue
        if tensor in clamps:  # the QDQ graph folds this Relu/Clip into the quantization: compare like with like
            low, high = clamps[tensor]
            pre = [np.clip(p, low, high) for p in pre]
        float_acts_for = match.get("float")
        ranked.append(
            {
                "tensor": tensor,
                "qdq_sqnr_db": round(float(compute_signal_to_quantization_noice_ratio(pre, post)), 3),
                "vs_fp32_sqnr_db": (
                    round(float(compute_signal_to_quantization_noice_ratio(float_acts_for, post)), 3)
                    if float_acts_for else None
                ),
                "nodes": nodes,
            }
        )
    ranked.sort(key=lambda item: item["qdq_sqnr_db"])
    return ranked


def _clamping_producers(model_path: Path) -> dict[str, tuple[float | None, float | None]]:
    """Tensors made by Relu/Clip, with their bounds.

    In a QDQ graph onnxruntime drops these activations and lets the quantization range do the
    clamping, so qdq_loss_debug pairs the *unclamped* input with the clamped output; without
    clamping the input first, every Relu would look like a badly quantized tensor.
    """
    model = onnx.load(str(model_path), load_external_data=False)
    constants = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    bounds: dict[str, tuple[float | None, float | None]] = {}
    for node in model.graph.node:
        if node.op_type == "Relu":
            bounds[node.output[0]] = (0.0, None)
        elif node.op_type == "Clip":
            low = constants.get(node.input[1]) if len(node.input) > 1 and node.input[1] else None
            high = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            bounds[node.output[0]] = (
                float(low) if low is not None else None,
                float(high) if high is not None else None,
            )
    return bounds


# Ops that only move or clamp 8-bit values: their output's range is fixed by the node feeding them.
_PASS_THROUGH = {"Relu", "Clip", "MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice"}


def _nodes_touching_tensors(model_path: Path) -> dict[str, list[str]]:
    """For each tensor, the quantizable nodes that must stay float for it to stay float.

    That is every quantizable consumer, the producer, and (through Relu/MaxPool/Reshape-like
    nodes, whose output shares their input's quantization) the compute node upstream.
    """
    model = onnx.load(str(model_path), load_external_data=False)
    nodes = list(model.graph.node)
    quantizable = {node.name for node in nodes if node.op_type in QDQRegistry}
    producer = {out: node for node in nodes for out in node.output if out}
    result: dict[str, set[str]] = {}
    for node in nodes:
        if node.name not in quantizable:
            continue
        for tensor in node.input:
            if tensor:
                result.setdefault(tensor, set()).add(node.name)
    for tensor in list(result) + [t for t in producer if t not in result]:
        current = producer.get(tensor)
        while current is not None and current.name in quantizable:
            result.setdefault(tensor, set()).add(current.name)
            if current.op_type not in _PASS_THROUGH or not current.input:
                break
            current = producer.get(current.input[0])
    return {tensor: sorted(names) for tensor, names in result.items() if names}


def nodes_for_top_k(ranked: Sequence[dict[str, Any]], k: int) -> list[str]:
    """The nodes to leave in float so the k worst tensors are no longer quantized."""
    chosen: list[str] = []
    for item in ranked[:k]:
        for node in item["nodes"]:
            if node not in chosen:
                chosen.append(node)
    return chosen
