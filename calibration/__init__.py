"""karyo.calibration: FP16 and INT8 variants of a bundle, with measured accuracy drift."""

from .config import GateConfig, QuantizationConfig
from .data import TensorDataReader, paths_sha256, select_stratified
from .drift import format_drift_table
from .pipeline import GateFailedError, add_low_precisions, quantize_bundle

__all__ = [
    "GateConfig",
    "GateFailedError",
    "QuantizationConfig",
    "TensorDataReader",
    "add_low_precisions",
    "format_drift_table",
    "paths_sha256",
    "quantize_bundle",
    "select_stratified",
]
