"""karyo runtime: what the scanner PC installs. numpy, OpenCV, onnxruntime and typer only.

Nothing here may import TensorFlow; a test runs `import karyo.runtime` in a fresh interpreter and
checks.
"""

from .bundle import Bundle, BundleError, Manifest, load_bundle
from .dataset import Sample, read_labeled_folder, read_labeled_folders
from .labels import LabelScheme, parse_label, scheme
from .preprocess import ImageError, PreprocessSpec, preprocess_array, preprocess_path

__all__ = [
    "Bundle",
    "BundleError",
    "ImageError",
    "LabelScheme",
    "Manifest",
    "PreprocessSpec",
    "Sample",
    "load_bundle",
    "parse_label",
    "preprocess_array",
    "preprocess_path",
    "read_labeled_folder",
    "read_labeled_folders",
    "scheme",
]
