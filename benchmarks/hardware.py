"""What this machine can do at best: GEMM throughput, to put a model's latency against a ceiling.

A latency figure alone does not say whether a model is slow or the CPU is; dividing the model's
achieved multiply-adds per second by a large matrix multiply's rate on the same cores and thread
count does. Three ceilings, none needing extra packages:
- numpy float32 matmul (OpenBLAS/MKL; the thread count is fixed through the environment, so it runs
  in a child process),
- ONNX Runtime float32 MatMul (MLAS, the library that runs our FP32 models),
- ONNX Runtime MatMulInteger uint8 x int8 (MLAS's int8 kernels, the ceiling for our INT8 models).
Also: MACs of an ONNX graph (conv = H_out*W_out*K*K*Cin/groups*Cout, matmul/gemm = in*out per row).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def _best_seconds(call, repeats: int, max_seconds: float) -> float:
    call()  # warm-up: thread pool start, page faults
    best = float("inf")
    started = time.perf_counter()
    for index in range(repeats):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
        if index >= 2 and time.perf_counter() - started > max_seconds:
            break
    return best


def numpy_fp32_gflops_here(size: int = 1024, repeats: int = 10, max_seconds: float = 5.0) -> float:
    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    seconds = _best_seconds(lambda: a @ b, repeats, max_seconds)
    return 2.0 * size**3 / seconds / 1e9


def numpy_fp32_gflops(threads: int, size: int = 1024, repeats: int = 10, max_seconds: float = 5.0) -> float:
    """numpy float32 GEMM GFLOP/s with exactly `threads` BLAS threads (measured in a child process)."""
    env = dict(os.environ)
    for name in _THREAD_VARIABLES:
        env[name] = str(threads)
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import hardware; "
        f"print(json.dumps(hardware.numpy_fp32_gflops_here({size}, {repeats}, {max_seconds})))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).resolve().parent)],
        env=env, capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    return float(json.loads(output.strip().splitlines()[-1]))


def _matmul_model(kind: str, m: int, k: int, n: int):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if kind == "fp32":
        weight = numpy_helper.from_array(rng.random((k, n), dtype=np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    else:
        weight = numpy_helper.from_array(rng.integers(-127, 128, (k, n)).astype(np.int8), "B")
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    graph = helper.make_graph(
        [node], f"gemm_{kind}",
        [helper.make_tensor_value_info("A", a_type, [m, k])],
        [helper.make_tensor_value_info("Y", y_type, [m, n])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


def ort_gemm_gops(kind: str, threads: int, size: int = 1024, repeats: int = 10, max_seconds: float = 5.0) -> float:
    """ONNX Runtime GEMM rate in G(FL)OP/s: kind 'fp32' (MatMul) or 'int8' (MatMulInteger u8 x s8)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(_matmul_model(kind, size, size, size), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    a = rng.random((size, size), dtype=np.float32) if kind == "fp32" else rng.integers(0, 256, (size, size)).astype(np.uint8)
    seconds = _best_seconds(lambda: session.run(None, {"A": a}), repeats, max_seconds)
    return 2.0 * size**3 / seconds / 1e9


def gemm_peaks(threads: int, size: int = 1024, repeats: int = 10, max_seconds: float = 5.0) -> dict[str, Any]:
    """All three ceilings; a missing one is None with the reason, never a crash of the whole benchmark."""
    peaks: dict[str, Any] = {"threads": threads, "matrix_size": size}
    probes = {
        "numpy_fp32_gflops": lambda: numpy_fp32_gflops(threads, size, repeats, max_seconds),
        "ort_fp32_gflops": lambda: ort_gemm_gops("fp32", threads, size, repeats, max_seconds),
        "ort_int8_gops": lambda: ort_gemm_gops("int8", threads, size, repeats, max_seconds),
    }
    for name, probe in probes.items():
        try:
            peaks[name] = round(probe(), 2)
        except Exception as exc:  # noqa: BLE001 - a ceiling we cannot measure is reported, not fatal
            peaks[name] = None
            peaks[f"{name}_error"] = f"{type(exc).__name__}: {exc}"[:200]
    return peaks


# --------------------------------------------------------------------------- model cost


def best_of(*measurements: dict[str, Any]) -> dict[str, Any]:
    """Per ceiling, the highest of several measurements: on a shared machine a low figure means
    someone else was using the cores, never that the hardware got slower."""
    merged: dict[str, Any] = dict(measurements[0])
    for name in ("numpy_fp32_gflops", "ort_fp32_gflops", "ort_int8_gops"):
        values = [m.get(name) for m in measurements if m.get(name)]
        merged[name] = max(values) if values else None
    merged["measurements"] = [{k: m.get(k) for k in ("numpy_fp32_gflops", "ort_fp32_gflops", "ort_int8_gops")} for m in measurements]
    return merged


def count_macs_onnx(model_path: str | Path) -> dict[str, Any]:
    """Multiply-adds per image of an ONNX graph (batch fixed to 1 for shape inference).

    Only Conv, MatMul and Gemm count (they are >99% of a CNN's arithmetic); nodes whose shapes
    cannot be inferred are listed in `unknown` so an undercount is visible. A matmul whose input
    shape is unknown (flatten computed at run time) counts one row per image.
    """
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(model_path))
    graph = model.graph
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes: dict[str, list[int | None]] = {}
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    initializers = {init.name: list(numpy_helper.to_array(init).shape) for init in model.graph.initializer}
    for init in model.graph.initializer:
        shapes.setdefault(init.name, list(init.dims))

    total = 0
    per_op = {"Conv": 0, "MatMul": 0, "Gemm": 0}
    unknown: list[str] = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            weight = shapes.get(node.input[1]) or initializers.get(node.input[1])
            out = shapes.get(node.output[0])
            if not weight or not out or len(out) != 4 or any(d is None for d in out[2:]):
                unknown.append(node.name or node.output[0])
                continue
            cout, cin_per_group, *kernel = weight
            macs = int(out[2] * out[3] * cout * cin_per_group * int(np.prod(kernel)))
        elif node.op_type in ("MatMul", "Gemm"):
            a_shape, b_shape = shapes.get(node.input[0]), shapes.get(node.input[1])
            if not b_shape or any(d is None for d in b_shape):
                unknown.append(node.name or node.output[0])
                continue
            trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute) if node.op_type == "Gemm" else False
            k, n = (b_shape[-1], b_shape[-2]) if trans_b else (b_shape[-2], b_shape[-1])
            if a_shape and len(a_shape) > 2 and all(d is not None for d in a_shape[1:-1]):
                rows = int(np.prod(a_shape[1:-1]))
            else:
                # [batch, K] input (a dense layer after a flatten whose shape is computed at run
                # time, as tf2onnx writes it): one row per image
                rows = 1
            macs = int(rows * k * n)
        else:
            continue
        per_op[node.op_type] += macs
        total += macs
    return {"macs": total, "per_op": per_op, "unknown": unknown}


def achieved_share(macs_per_image: int, batch_size: int, p50_ms: float, peak_gops: float | None) -> dict[str, Any]:
    """GFLOP/s the model reached at this batch (2 FLOPs per MAC) and its share of the given peak."""
    gflops = 2.0 * macs_per_image * batch_size / (p50_ms / 1000.0) / 1e9 if p50_ms > 0 else None
    share = gflops / peak_gops if gflops is not None and peak_gops else None
    return {"achieved_gflops": float(f"{gflops:.4g}") if gflops else None, "share_of_peak": float(f"{share:.4g}") if share else None}
