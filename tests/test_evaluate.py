"""`evaluate_bundle` reproduces the manifest's drift figures; plots draw readable PNGs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from tiny_models import make_bundle, write_labeled_folder

from karyo.runtime.bundle import load_bundle, staged_folder, write_manifest
from karyo.runtime.dataset import read_labeled_folder
from karyo.runtime.evaluate import evaluate_bundle
from karyo.runtime.labels import scheme
from karyo.runtime.metrics import drift
from karyo.runtime.plots import confusion_matrix_png, line_plot_png
from karyo.runtime.preprocess import preprocess_path


def test_result_keeps_samples_and_probabilities(tiny_bundle, labeled_crops, tmp_path):
    root, crops = labeled_crops
    extra = tmp_path / "data"
    write_labeled_folder(extra, tiny_bundle.labels, per_class=1, classes=[3, 4])
    (extra / "4" / "broken.tiff").write_bytes(b"II*\x00broken")
    result = evaluate_bundle(tiny_bundle.path, [root, extra], precision="int8")
    assert result.precisions == ["int8"] and set(result.probs) == {"fp32", "int8"}  # fp32 is the drift reference
    assert len(result.samples) == len(crops) + 2 == len(result.y_true) == len(result.probs["int8"])
    assert [path for path, _ in result.unreadable] == [str(extra / "4" / "broken.tiff")]
    tensors = np.stack([preprocess_path(s.path, tiny_bundle.spec) for s in result.samples])
    np.testing.assert_allclose(result.probs["int8"], tiny_bundle.reference(tensors, "int8"), atol=1e-5)
    expected = drift(result.probs["int8"], result.probs["fp32"], result.y_true, tiny_bundle.labels.labels)
    assert result.drift["int8"] == expected
    result.extra["cells"] = {"n_cells": 0}  # the hook later analyses use
    data = result.to_dict()
    assert data["cells"] == {"n_cells": 0} and data["precision"] == "int8" and data["n"] == 50
    assert data["precisions"]["int8"]["agreement_with_fp32"] == expected["agreement_with_fp32"]


def test_figures_equal_what_calibration_stored(tmp_path):
    """The contract: `karyo evaluate` on the evaluation crops reproduces the manifest's drift figures exactly."""
    pytest.importorskip("onnx")
    calibration = pytest.importorskip("karyo.calibration")
    bundle = make_bundle(tmp_path / "b", precisions=("fp32",))
    root = tmp_path / "crops"
    write_labeled_folder(root, bundle.labels, per_class=3)
    samples = read_labeled_folder(root)
    with staged_folder(bundle.path, start_from_existing=True) as stage:
        manifest = load_bundle(stage).manifest
        try:
            calibration.add_low_precisions(stage, manifest, samples, samples, progress=False)
        except calibration.GateFailedError:
            pass  # tiny model failed the INT8 gate: fp16 is still there to compare
        write_manifest(stage, manifest)
    stored = load_bundle(bundle.path)
    low = [p for p in stored.available_precisions if p != "fp32"]
    assert low, "calibration wrote no low-precision model"
    result = evaluate_bundle(bundle.path, samples)
    for precision in low:
        ours, theirs = result.drift[precision], stored.metrics(precision)
        for key in ("agreement_with_fp32", "kl_to_fp32", "max_prob_diff"):
            assert ours[key] == theirs[key], (precision, key)
        assert result.reports[precision]["accuracy"] == theirs["accuracy"]


@pytest.mark.parametrize("name", ["normal24", "seed32"])
def test_confusion_matrix_png_is_drawn(tmp_path, name):
    labels = scheme(name).labels
    n = len(labels)
    matrix = np.diag(np.full(n, 30))
    matrix[0, 1] = 7
    path = confusion_matrix_png(matrix, labels, tmp_path / f"{name}.png", title="test")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[0] > n * 25 and image.shape[1] > n * 25
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.png"]  # no temp files left
    # the diagonal is dark (full row share), an empty off-diagonal cell stays white
    assert image.std() > 20
    with pytest.raises(ValueError):
        confusion_matrix_png(matrix[:-1], labels, tmp_path / "bad.png")


def test_line_plot_png(tmp_path):
    path = line_plot_png({"fp32": [(1, 2.0), (8, 5.0), (64, 30.0)], "int8": [(1, 1.0), (64, 12.0)]}, tmp_path / "l.png",
                         "latency", "batch", "ms")
    image = cv2.imread(str(path))
    assert image.shape == (500, 820, 3)
    colours = {tuple(int(c) for c in px) for px in image.reshape(-1, 3)[::7]}
    assert (178, 114, 0) in colours and (0, 94, 213) in colours  # both series drawn in their colours


def test_cell_figures_when_the_manifest_names_cells(tiny_bundle, tmp_path):
    """With case/cell known, evaluate adds assembly and exact-karyotype figures; without, it adds none."""
    from karyo.runtime.cli_evaluate import format_report
    from karyo.runtime.cell_evaluation import evaluate_cells

    root = tmp_path / "cells"
    written = write_labeled_folder(root, tiny_bundle.labels, per_class=4)
    rows = ["path,label,case,cell"]
    for i, (path, label) in enumerate(written):
        rows.append(f"{path.relative_to(root).as_posix()},{label},case{i % 2},{i % 4 // 2}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    result = evaluate_bundle(tiny_bundle.path, root, precision="fp32")
    cells = result.to_dict()["cells"]
    assert cells["cells"] == 4 and cells["crops"] == len(written)
    assert cells == evaluate_cells(result.samples, result.probs["fp32"], tiny_bundle.labels)
    summary = result.to_dict()["precisions"]["fp32"]
    assert summary["crop_accuracy_assembled"] == cells["crop_accuracy_assembled"]
    review = cells["review"]
    assert review["wrong_assembled"] == round((1 - cells["crop_accuracy_assembled"]) * len(written))
    assert 0 <= review["wrong_flagged"] <= min(review["flagged"], review["wrong_assembled"])
    assert 0 <= review["alternative_right"] <= review["wrong_flagged"]
    text = format_report(result)
    assert (f"flagged for review: {review['flagged']} crops ({100 * review['flagged_rate']:.1f}%), holding "
            f"{review['wrong_flagged']} of the {review['wrong_assembled']} wrong after assembly (the label shown "
            f"with the flag is the true one for {review['alternative_right']})") in text
    # 24 crops a cell: every cell incomplete, so no patient has a karyotype to compare
    assert {k: cells["cases"][k] for k in ("cases", "with_karyotype", "exact")} == {"cases": 2, "with_karyotype": 0, "exact": 0}
    assert "patients: 2, none with a complete cell in truth to count" in text
    (root / "manifest.csv").unlink()
    assert "cells" not in evaluate_bundle(tiny_bundle.path, root, precision="fp32").to_dict()


def test_cells_are_assembled_under_the_trisomies_the_lab_sees(tiny_bundle, tmp_path, monkeypatch):
    """`karyo evaluate --trisomies any` assembles the cells under the priors `karyo karyotype
    --trisomies any` uses (a third 9 as likely as a 47,XXX), and says so in its JSON."""
    import json

    from typer.testing import CliRunner

    from karyo.runtime import cell_evaluation
    from karyo.runtime.cli import app

    root = tmp_path / "cells"
    written = write_labeled_folder(root, tiny_bundle.labels, per_class=2)
    rows = ["path,label,case,cell"] + [f"{p.relative_to(root).as_posix()},{label},case0,{i % 2}"
                                       for i, (p, label) in enumerate(written)]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    seen: list[float] = []
    real = cell_evaluation.evaluate_cells

    def spy(samples, probs, labels, priors=None, *args, **kwargs):
        seen.append((priors.trisomy("9"), kwargs["constitutional"]))
        return real(samples, probs, labels, priors, *args, **kwargs)

    monkeypatch.setattr(cell_evaluation, "evaluate_cells", spy)
    for option, cost in ((["--trisomies", "any"], (6.0, False)), ([], (8.0, True))):  # constitutional: mos
        seen.clear()
        result = CliRunner().invoke(app, ["evaluate", str(tiny_bundle.path), str(root), "--precision", "fp32", "--json", *option])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["trisomies"] == (option[1] if option else "viable")
        assert seen == [cost]
    plain = CliRunner().invoke(app, ["evaluate", str(tiny_bundle.path), str(root), "--precision", "fp32", "--trisomies", "any"])
    assert plain.exit_code == 0 and "cells (fp32, assembled for any trisomies): 2;" in plain.stdout
    wrong = CliRunner().invoke(app, ["evaluate", str(tiny_bundle.path), str(root), "--trisomies", "some"])
    assert wrong.exit_code == 2 and "'some' is not one of" in wrong.output
