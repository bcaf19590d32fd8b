"""karyo.runtime.int8_check: the CPU question behind a full-range INT8 bundle, answered by the CPU."""

from __future__ import annotations

import numpy as np
import pytest

from karyo.runtime import int8_check
from karyo.runtime.int8_check import PROBE_MODEL, cpu_overflows_uint8_int8, full_range_int8, probe_sums

EXACT = 2_070_000.0  # 64 x 255 x 127 = 2,072,640, requantized at scale 10,000
PAIRS_IN_16_BITS = 1_050_000.0  # 32 pairs each clipped to 32,767: 1,048,544, requantized


def test_the_probe_sums_64_products_and_the_cpu_either_keeps_them_or_clips_pairs() -> None:
    computed, meant = probe_sums()
    assert meant == EXACT
    # a VNNI CPU sums in 32 bits; AVX2 (this repository's CI machine when written) clips each pair to 16 bits
    assert computed in (EXACT, PAIRS_IN_16_BITS)
    assert cpu_overflows_uint8_int8() is (computed == PAIRS_IN_16_BITS)


def test_the_embedded_probe_is_the_graph_its_comment_describes() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    channels = int8_check.PROBE_CHANNELS
    initializers = [
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0, np.uint8), "zp_u8"),
        numpy_helper.from_array(np.array(0, np.int8), "zp_s8"),
        numpy_helper.from_array(np.full((1, channels, 1, 1), 127, np.int8), "w_q"),
        numpy_helper.from_array(np.array(10000.0, np.float32), "out_scale"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "one", "zp_u8"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "one", "zp_u8"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "one", "zp_s8"], ["w_dq"]),
        helper.make_node("Conv", ["x_dq", "w_dq"], ["y"]),
        helper.make_node("QuantizeLinear", ["y", "out_scale", "zp_u8"], ["y_q"]),
        helper.make_node("DequantizeLinear", ["y_q", "out_scale", "zp_u8"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes, "u8s8_probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 1, 1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, 1, 1])], initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="karyo")
    model.ir_version = 8
    onnx.checker.check_model(model)
    assert model.SerializeToString() == PROBE_MODEL


def test_only_uint8_by_full_range_int8_is_at_risk() -> None:
    entry = {"quantization": {"reduce_range": False, "weight_type": "qint8", "activation_type": "quint8"}}
    assert full_range_int8(entry)
    assert not full_range_int8({})  # not written by karyo's quantizer, which has always recorded reduce_range
    assert not full_range_int8({"quantization": {"method": "minmax"}})
    assert not full_range_int8({"quantization": {**entry["quantization"], "reduce_range": True}})
    assert not full_range_int8({"quantization": {**entry["quantization"], "activation_type": "qint8"}})
    assert not full_range_int8({"quantization": {**entry["quantization"], "weight_type": "quint8"}})
