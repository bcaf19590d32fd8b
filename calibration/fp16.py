"""FP16 variant for the CUDA provider.

Half precision halves the model file and roughly doubles convolution throughput on GPUs with
tensor cores. Inputs and outputs stay float32 (`keep_io_types`), so the bundle's input contract
and the preprocessing do not change. On CPU onnxruntime runs FP16 graphs by inserting casts,
which is slow but correct; that is how its drift is measured on a machine without a GPU.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
from onnxconverter_common import float16


def convert_fp16(fp32_path: Path, out_path: Path) -> Path:
    model = onnx.load(str(fp32_path))
    with warnings.catch_warnings():  # one warning per tiny weight clamped to fp16's range: expected, not actionable
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.checker.check_model(converted)
    temp = out_path.with_name(f".{out_path.name}.tmp")
    onnx.save(converted, str(temp))
    temp.replace(out_path)
    return out_path
