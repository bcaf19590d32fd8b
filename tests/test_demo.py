"""`karyo-export demo --fast` end to end: the bundle it writes is verified and the scanner-side CLI accepts it."""

from __future__ import annotations

import json
import os

import cv2
import pytest
from typer.testing import CliRunner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from karyo.runtime.bundle import load_bundle  # noqa: E402


@pytest.mark.slow
def test_demo_fast_bundle_works_with_karyo_classify_and_evaluate(tmp_path):
    from karyo.export.cli import app as export_app
    from karyo.runtime.cli import app as runtime_app

    runner = CliRunner()
    out = tmp_path / "demo"
    result = runner.invoke(export_app, ["demo", "--out", str(out), "--fast"])
    assert result.exit_code == 0, result.output
    assert "demo finished" in result.output and "metaphase" in result.output and "called 4" in result.output
    karyogram = cv2.imread(str(out / "karyogram.png"))
    assert karyogram is not None and karyogram.shape[0] > 200 and karyogram.std() > 10

    bundle = load_bundle(out / "bundle")
    assert {"fp32", "fp16"} <= set(bundle.available_precisions)
    assert bundle.metrics("fp32")["parity"]["top1_agreement"] == 1.0
    prior = bundle.size_prior  # synthetic cells come with cell ids, so training fitted the size prior
    assert prior is not None and prior.mean[bundle.labels.index("1"), 0] > prior.mean[bundle.labels.index("21"), 0]
    for name in ("model.keras", "train_config.json", "report.json", "split.json"):
        assert (out / "model" / name).is_file()

    crops = sorted((out / "data" / "7").glob("*.png"))[:3]
    classified = runner.invoke(runtime_app, ["classify", str(out / "bundle"), *map(str, crops), "--json", "--provider", "cpu"])
    assert classified.exit_code == 0, classified.output
    document = json.loads(classified.stdout)
    assert len(document["results"]) == 3 and all(r["error"] is None for r in document["results"])
    assert all(r["label"] in bundle.labels.labels for r in document["results"])

    evaluated = runner.invoke(runtime_app, ["evaluate", str(out / "bundle"), str(out / "data"), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "fp32" in evaluated.stdout
    cell_figures = json.loads(evaluated.stdout)["cells"]
    assert 0.0 < cell_figures["crop_accuracy_size"] <= 1.0 and cell_figures["cells"] == 12

    karyotyped = runner.invoke(runtime_app, ["karyotype", str(out / "bundle"), "--by-cell", str(out / "data"), "--json"])
    assert karyotyped.exit_code == 0, karyotyped.output
    cells = json.loads(karyotyped.stdout)["cells"]
    assert len(cells) == 12 and all(cell["count"] >= 45 for cell in cells)
