"""benchmarks/compare.py on tiny bundles whose errors are known: one reads every 4 as a 5 and back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import compare  # noqa: E402
from tiny_models import make_bundle, write_labeled_folder  # noqa: E402

from karyo.runtime.evaluate import evaluate_bundle  # noqa: E402


@pytest.fixture(scope="module")
def cells_and_bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    right = make_bundle(root / "right", precisions=("fp32",))
    swapped = make_bundle(root / "swapped", precisions=("fp32",), swap=("4", "5"))
    data = root / "cells"
    written = write_labeled_folder(data, right.labels, per_class=4)
    rows = ["path,label,case,cell"]  # four cells, each with one crop of every class
    for i, (path, label) in enumerate(written):
        rows.append(f"{path.relative_to(data).as_posix()},{label},case{i % 2},{i % 4 // 2}")
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    return data, right, swapped


def test_fixed_broken_and_overlap_follow_the_known_errors(cells_and_bundles, tmp_path, capsys):
    data, right, swapped = cells_and_bundles
    reference = evaluate_bundle(right.path, data, precision="fp32")
    assert reference.reports["fp32"]["accuracy"] == 1.0  # the premise: the reference reads every crop right
    out = tmp_path / "compare.json"
    assert compare.main([str(data), str(right.path), str(swapped.path), "--precision", "fp32", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["crops"] == 96 and set(summary["stages"]) == {"image", "assembled"}  # no size prior: no size stage
    for stage in ("image", "assembled"):  # one 4 and one 5 per cell read as each other: counts unchanged
        figures = summary["stages"][stage]
        first, second = figures["bundles"]
        assert (first["errors"], first["accuracy"]) == (0, 1.0) and "fixed" not in first
        assert (second["errors"], second["fixed"], second["broken"]) == (8, 0, 8)
        assert second["accuracy"] == pytest.approx(88 / 96)
        assert (figures["wrong_under_all"], figures["wrong_under_half_or_more"], figures["wrong_under_any"]) == (0, 8, 8)
    reverse = compare.summarize(compare.compare(str(data), [str(swapped.path), str(right.path)], "fp32"))
    assert reverse["stages"]["image"]["bundles"][1]["fixed"] == 8 and reverse["stages"]["image"]["bundles"][1]["broken"] == 0
    text = capsys.readouterr().out
    assert "| " + str(swapped.path) + " | 96 | 91.67% | 8 | 0 | 8 |" in text


def test_bundles_that_read_different_crops_are_refused(cells_and_bundles, tmp_path):
    data, right, _ = cells_and_bundles
    binary = make_bundle(tmp_path / "binary", scheme_name="binary:del(5)(p14)", precisions=("fp32",))
    with pytest.raises(SystemExit, match="different set of crops"):
        compare.compare(str(data), [str(right.path), str(binary.path)], "fp32")
