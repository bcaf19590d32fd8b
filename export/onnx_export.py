"""Keras -> ONNX FP32, and the parity check that proves the ONNX graph computes what Keras computes.

tf2onnx's `from_keras` breaks on Keras 3 models (it looks up `keras_tensor_N` names that Keras 3
no longer puts in the graph), so the model is traced as a `tf.function` with a fixed input
signature and converted with `from_function`. The graph gets the contract names the runtime
expects: input "image" (NHWC float32, dynamic batch) and output "probabilities".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .models import configure_tensorflow

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
DEFAULT_OPSET = 17
# FP32 conversion only reorders float operations: differences come from summation order, far
# below this. A larger gap means the graph computes something else.
PARITY_MAX_ABS_DIFF = 1e-4


class ExportError(RuntimeError):
    """The ONNX graph failed to match its Keras model; the message carries the numbers."""


def keras_to_onnx(model, out_path: Path, opset: int = DEFAULT_OPSET, mirror: bool = False) -> Path:
    """Convert a Keras model with one NHWC input to an ONNX file at out_path.

    `mirror`: the graph classifies each crop and its left-right mirror image in one batch and
    returns the mean of the two probability vectors (test-time augmentation). A chromosome seen
    from the other side is the same chromosome, and training already showed the model both, so
    the average cancels part of each view's noise. It lives in the graph, not in the runtime, so
    every consumer (calibration, drift gate, `karyo bench`, the scanner) measures the same thing.
    """
    configure_tensorflow()
    import onnx
    import tensorflow as tf
    import tf2onnx

    shape = list(model.input_shape)
    signature = (tf.TensorSpec([None, *shape[1:]], tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=signature)
    def serve(image):
        if not mirror:
            return model(image, training=False)
        # crop i and its mirror image become rows 2i and 2i+1 of one batch; only reshapes with
        # constant shapes, which onnxruntime's symbolic shape inference (INT8 pre-processing) follows
        both = tf.reshape(tf.stack([image, image[:, :, ::-1, :]], axis=1), [-1, *shape[1:]])
        probs = model(both, training=False)
        return tf.reduce_mean(tf.reshape(probs, [-1, 2, int(model.output_shape[-1])]), axis=1)

    if not hasattr(np, "product"):  # tf2onnx 1.17's large-model path still calls numpy 1's alias
        np.product = np.prod  # type: ignore[attr-defined]
    proto, storage = tf2onnx.convert.from_function(serve, input_signature=signature, opset=opset, large_model=True)
    _inline_external_tensors(proto, storage)
    _rename_io(proto)
    proto.producer_name = "karyo"
    onnx.checker.check_model(proto)
    out_path = Path(out_path)
    onnx.save(proto, str(out_path))
    return out_path


def keras_probabilities(model, x: np.ndarray, mirror: bool = False, batch_size: int = 128) -> np.ndarray:
    """What the exported graph should compute, computed by Keras: the reference for the parity check."""
    x = np.asarray(x, dtype=np.float32)
    probs = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)
    if mirror:
        flipped = np.ascontiguousarray(x[:, :, ::-1])
        probs = (probs + np.asarray(model.predict(flipped, batch_size=batch_size, verbose=0), dtype=np.float32)) * 0.5
    return probs


def _inline_external_tensors(proto, storage) -> None:
    """Put the weights tf2onnx kept aside back into the graph.

    tf2onnx's large-model mode keeps big constants out of the graph while it rewrites it: for the
    82M-parameter seed DCNN that cut conversion here from 120 s and 21 GB peak memory to 26 s and
    11 GB. The bundle still wants one self-contained .onnx file (far below protobuf's 2 GB limit).
    """
    if storage is None:
        return
    import onnx

    tensors = list(proto.graph.initializer)
    for node in proto.graph.node:
        tensors.extend(attribute.t for attribute in node.attribute if attribute.type == onnx.AttributeProto.TENSOR)
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = {entry.key: entry.value for entry in tensor.external_data}["location"]
        tensor.raw_data = storage.name_to_tensor_data[location]
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT


def _rename_io(proto) -> None:
    """Give the single input and output the contract names, fixing every node that refers to them."""
    graph = proto.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ExportError(f"expected one input and one output, the graph has {len(graph.input)} and {len(graph.output)}")
    renames = {graph.input[0].name: INPUT_NAME, graph.output[0].name: OUTPUT_NAME}
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    graph.input[0].name = INPUT_NAME
    graph.output[0].name = OUTPUT_NAME


def onnx_probabilities(model_path: Path, tensors: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Run the ONNX file on CPU the way the runtime does (its session helpers when available)."""
    try:
        from karyo.runtime.session import create_session, run_probabilities
    except ImportError:
        create_session = run_probabilities = None
    if create_session is not None:
        session, _ = create_session(Path(model_path), provider="cpu")
        return np.asarray(run_probabilities(session, tensors.astype(np.float32), batch_size=batch_size))
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    parts = [
        session.run([OUTPUT_NAME], {INPUT_NAME: tensors[i : i + batch_size].astype(np.float32)})[0]
        for i in range(0, len(tensors), batch_size)
    ]
    return np.concatenate(parts).astype(np.float32)


def parity(keras_probs: np.ndarray, onnx_probs: np.ndarray, tolerance: float = PARITY_MAX_ABS_DIFF) -> dict[str, Any]:
    """Max abs difference and top-1 agreement between Keras and ONNX outputs on the same inputs.

    `decisive_disagreements` counts top-1 changes where Keras's winner led by more than twice the
    tolerance: a swap between two classes tied within rounding is not a conversion fault.
    """
    keras_probs = np.asarray(keras_probs, dtype=np.float64)
    onnx_probs = np.asarray(onnx_probs, dtype=np.float64)
    if keras_probs.shape != onnx_probs.shape:
        raise ExportError(f"parity: Keras output {keras_probs.shape} vs ONNX output {onnx_probs.shape}")
    n = len(keras_probs)
    top_keras, top_onnx = keras_probs.argmax(axis=1), onnx_probs.argmax(axis=1)
    changed = top_keras != top_onnx
    ordered = np.sort(keras_probs, axis=1)
    margin = ordered[:, -1] - ordered[:, -2] if keras_probs.shape[1] > 1 else np.ones(n)
    return {
        "n": int(n),
        "max_abs_diff": float(np.max(np.abs(keras_probs - onnx_probs))) if n else 0.0,
        "top1_agreement": float(np.mean(~changed)) if n else 1.0,
        "decisive_disagreements": int(np.sum(changed & (margin > 2 * tolerance))),
        "tolerance": tolerance,
    }


def check_parity(result: dict[str, Any]) -> None:
    """Raise ExportError when the ONNX graph does not reproduce the Keras model."""
    if result["n"] == 0:
        raise ExportError("parity check needs at least one input crop")
    if result["max_abs_diff"] > result["tolerance"] or result["decisive_disagreements"] > 0:
        raise ExportError(
            f"ONNX FP32 does not match Keras: max abs difference {result['max_abs_diff']:.3g} "
            f"(limit {result['tolerance']:.0e}), top-1 agreement {result['top1_agreement']:.4f} "
            f"on {result['n']} crops; the conversion is wrong, do not ship this bundle"
        )
