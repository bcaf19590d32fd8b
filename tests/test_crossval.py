"""benchmarks/crossval.py's evaluation step on a finished fold: the default read and `--orientation any`
kept apart, on a held-out cell whose crops all lie upside down."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import crossval  # noqa: E402
from tiny_models import noisy_crop  # noqa: E402


def _finished_fold(work: Path, bundle: Path, labels) -> None:
    """What `karyo-export train` and `convert` leave for fold 1: a model folder, its held-out cell, a bundle."""
    model = work / "fold1"
    heldout = model / "heldout"
    rng = np.random.default_rng(3)
    male = [c for c in labels.labels if c not in ("X", "Y") for _ in range(2)] + ["X", "Y"]
    rows = ["path,label,case,cell"]
    for i, label in enumerate(male):
        relative = f"{label}/{i}.png"
        (heldout / label).mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(heldout / relative), cv2.rotate(noisy_crop(labels.index(label), rng), cv2.ROTATE_180))
        rows.append(f"{relative},{label},case7,1")
    (heldout / "manifest.csv").write_text("\n".join(rows) + "\n")
    history = {"loss": [1.0, 0.5], "time_budget": {"asked_epochs": 24, "planned_epochs": 2}}  # cut by its budget
    (model / "report.json").write_text(json.dumps({"history": history, "seconds": 12.0}))
    (model / "split.json").write_text(json.dumps({"test_cases": ["case7"]}))
    shutil.copytree(bundle, work / "fold1-bundle")


def test_any_is_evaluated_beside_the_default_and_neither_overwrites_the_other(tiny_bundle, tmp_path):
    work = tmp_path / "cv"
    _finished_fold(work, tiny_bundle.path, tiny_bundle.labels)
    assert crossval.main(["data", "--work", str(work), "--only", "1"]) == 0
    assert crossval.main(["data", "--work", str(work), "--only", "1", "--orientation", "any"]) == 0
    as_given = json.loads((work / "crossval.json").read_text())
    either = json.loads((work / "crossval-any.json").read_text())
    assert as_given["orientation"] == "p-arm-up" and either["orientation"] == "any"
    assert json.loads((work / "fold1-eval-any.json").read_text())["orientation"] == "any"
    assert json.loads((work / "fold1-eval.json").read_text())["orientation"] == "p-arm-up"
    (row_given,), (row_either,) = as_given["rows"], either["rows"]
    assert row_either["crops"] == row_given["crops"] == 46
    assert row_either["int8"] == 1.0 and row_given["int8"] <= 0.3  # every crop lies upside down
    assert row_either["exact"] == 1.0 and row_either["abnormal"] == []
    timings = json.loads((work / "fold1-timings.json").read_text())
    assert {"evaluate_s", "evaluate_any_s"} <= set(timings)
    assert "| 1 |" in (work / "crossval-any.md").read_text()
    # patients exact (read upside down, the crops are shuffled, yet the one cell still reads 46,XY);
    # train minutes, epochs trained of asked
    assert "| 1/1 | 0.2 (2 of 24) |" in (work / "crossval.md").read_text()
    assert row_given["patients"] == row_either["patients"] == [1, 1]
    # the line under the table: crops and exact calls once the flagged crops are put right and each cell
    # assembled again around them (read both ways, nothing here is wrong to begin with)
    assert row_either["review"]["crop_accuracy_reassembled"] == 1.0 and row_either["review"]["complete_exact_reassembled"] == 1
    assert "assembled again around them (`karyo karyotype --relabel`): 100.00 +- 0.00% of crops right, 1 of 1 complete" \
        in (work / "crossval-any.md").read_text()
    assert row_either["review"]["flagged_again"] == 0 and row_either["review"]["crop_accuracy_rechecked"] == 1.0
    assert "until nothing new is flagged (0 crops more): 100.00 +- 0.00% of crops right, 1 of 1 complete" \
        in (work / "crossval-any.md").read_text()
