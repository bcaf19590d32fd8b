"""Shared test setup: tiny bundles and labeled folders (CPU only, no TensorFlow), quiet logs, fast hypothesis."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tiny_models

import pytest  # noqa: E402

from karyo.export.models import ask_xla_for_deterministic_gpu_ops, requested_keras_backend  # noqa: E402

if requested_keras_backend() == "jax":
    # as `karyo-export train` does before JAX starts (it reads XLA_FLAGS once): the bit-for-bit
    # tests run under JAX on a GPU only with XLA's deterministic ops (measured on an H100)
    ask_xla_for_deterministic_gpu_ops()

try:
    from hypothesis import HealthCheck, settings

    settings.register_profile("karyo", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("karyo")
except ImportError:  # hypothesis is a test extra; property tests import it themselves
    pass


def _not_installed(*modules: str) -> list[str]:
    return [name for name in modules if importlib.util.find_spec(name) is None]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a runtime-only install (`pip install ".[test]"`, as on the scanner PC) the training-side
    tests skip, naming what is missing, so that the runtime's own tests can be run there to check it."""
    training = _not_installed("keras", requested_keras_backend())  # what `karyo-export train` imports
    tensorflow = _not_installed("keras", "tensorflow")
    for item in items:
        missing = training if item.get_closest_marker("slow") else tensorflow if item.get_closest_marker("export") else []
        if missing:
            item.add_marker(pytest.mark.skip(reason=f"needs the export extra (pip install \".[export]\"): "
                                                    f"{', '.join(missing)} not installed"))


REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA} (realdata tests need ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A verified normal24 bundle with fp32, fp16 and int8 files (the low ones are perturbed copies)."""
    from tiny_models import make_bundle

    return make_bundle(tmp_path_factory.mktemp("bundles") / "tiny", precisions=("fp32", "fp16", "int8"))


@pytest.fixture(scope="session")
def labeled_crops(tmp_path_factory, tiny_bundle):
    """`<label>/c<k>_<i>.png`, two crops per class of the tiny bundle's scheme; returns (root, [(path, label)])."""
    from tiny_models import write_labeled_folder

    root = tmp_path_factory.mktemp("crops") / "data"
    return root, write_labeled_folder(root, tiny_bundle.labels, per_class=2)
