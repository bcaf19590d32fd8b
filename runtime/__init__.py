"""karyo runtime: what the scanner PC installs. numpy, OpenCV, onnxruntime and typer only.

Nothing here may import TensorFlow; a test runs `import karyo.runtime` in a fresh interpreter and
checks.
"""

from .bundle import Bundle, BundleError, Manifest, load_bundle
from .dataset import Sample, read_labeled_folder, read_labeled_folders
from .labels import LabelScheme, parse_label, scheme
from .preprocess import ImageError, PreprocessSpec, preprocess_array, preprocess_path

# onnxruntime loads only when one of these is first used, so `import karyo.runtime` stays cheap
# for code that only reads bundles, labels or images (training, dataset tools).
_LAZY = {
    "Classifier": "classifier",
    "Prediction": "classifier",
    "create_session": "session",
    "run_probabilities": "session",
    "ProviderError": "session",
    "evaluate_bundle": "evaluate",
    "EvaluationResult": "evaluate",
    "Karyotyper": "karyotyper",
    "CellResult": "karyotyper",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Bundle",
    "BundleError",
    "CellResult",
    "Classifier",
    "EvaluationResult",
    "ImageError",
    "Karyotyper",
    "LabelScheme",
    "Manifest",
    "Prediction",
    "PreprocessSpec",
    "ProviderError",
    "Sample",
    "create_session",
    "evaluate_bundle",
    "load_bundle",
    "parse_label",
    "preprocess_array",
    "preprocess_path",
    "read_labeled_folder",
    "read_labeled_folders",
    "run_probabilities",
    "scheme",
]
