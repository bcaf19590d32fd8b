"""The scanner PC installs only the runtime: importing it must not pull in the training stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ["tensorflow", "keras", "tf2onnx", "onnx", "onnxconverter_common"]


@pytest.mark.parametrize(
    "statement",
    [
        "import karyo.runtime",
        "import karyo.runtime.cli",
        "from karyo.runtime import Classifier, Prediction, create_session, ProviderError",
        "import karyo.runtime.evaluate, karyo.runtime.plots",
    ],
)
def test_runtime_imports_no_training_packages(statement):
    probe = f"{statement}\nimport sys, json\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_plain_import_does_not_even_load_onnxruntime():
    probe = "import karyo.runtime, sys; print('onnxruntime' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "False"
