"""Label audit: constructed cells with known label mistakes, and `karyo audit` on a tiny bundle."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from karyo.runtime.audit import DisputedCrop, audit_labels, group_disputes
import karyo.runtime.karyogram as karyogram
from karyo.runtime.bundle import case_digest, load_bundle, write_manifest
from karyo.runtime.cli import app
from karyo.runtime.dataset import Sample
from karyo.runtime.labels import AUTOSOMES, NORMAL24, scheme
from karyo.runtime.preprocess import focused_crop
from tiny_models import noisy_crop

NORMAL = scheme("normal24")
CELL_46XY = [c for c in AUTOSOMES for _ in range(2)] + ["X", "Y"]


def confident(truth: list[str], p: float = 0.97) -> np.ndarray:
    """Each crop read as its true chromosome with probability p, the rest spread evenly."""
    probs = np.full((len(truth), 24), (1 - p) / 23)
    probs[np.arange(len(truth)), [NORMAL.index(t) for t in truth]] = p
    return probs


def samples_for(given: list[str], case: str = "c1", cell: str = "1") -> list[Sample]:
    return [Sample(Path(f"{case}_{cell}_{i:02d}.png"), label, case, cell) for i, label in enumerate(given)]


def test_a_slipped_row_is_one_shift_finding_with_its_evidence():
    """The pki-dev pattern: every label from 18 on one place after what the crop is (a 17 labelled 18 ...)."""
    truth = CELL_46XY
    start = truth.index("17")
    given = truth[:start] + [NORMAL24[NORMAL24.index(t) + 1] for t in truth[start:-1]] + ["Y"]
    # the last crop (a Y labelled Y) and the crops before 17 are right; 17 .. X are labelled one place on
    audit = audit_labels(samples_for(given), confident(truth), NORMAL)
    assert [f.kind for f in audit.findings] == ["shift"]
    shift = audit.findings[0]
    slipped = [i for i, (g, t) in enumerate(zip(given, truth)) if g != t]
    assert len(slipped) == 13 and audit.disputed == 13  # 17 .. 22 twice, and the X labelled Y
    assert shift.offset == 1 and len(shift.crops) == 13 and shift.cell == "c1/1"
    assert [c.label for c in shift.crops] == [given[i] for i in slipped]
    assert all(NORMAL24.index(c.label) - NORMAL24.index(c.suggested) == 1 for c in shift.crops)
    assert shift.evidence == pytest.approx(13 * math.log(0.97 / (0.03 / 23)))
    assert "13 crops labelled 18 to Y look like the chromosome 1 place before their label" in shift.describe()


def test_an_exchange_and_a_single_and_the_odds_threshold():
    truth = CELL_46XY
    given = list(truth)
    four, five = truth.index("4"), truth.index("5")
    given[four], given[five] = "5", "4"
    nine = truth.index("9")
    given[nine] = "9"  # unchanged
    probs = confident(truth)
    # the crop labelled 12 reads 12 at 0.3 and 11 at 0.6: the model disputes it, but only 2:1
    twelve = truth.index("12")
    probs[twelve] = 0.1 / 22
    probs[twelve, NORMAL.index("11")], probs[twelve, NORMAL.index("12")] = 0.6, 0.3
    audit = audit_labels(samples_for(given), probs, NORMAL)
    assert [f.kind for f in audit.findings] == ["exchange"]  # the 12 is assembled as 12 (counts), not disputed
    exchange = audit.findings[0]
    assert {(c.label, c.suggested) for c in exchange.crops} == {("5", "4"), ("4", "5")}
    assert exchange.evidence == pytest.approx(2 * math.log(0.97 / (0.03 / 23)))
    # a lone mislabel: a 9 labelled 10 (no 10 labelled 9), found at 20:1, gone at odds above its own
    given[nine] = "10"
    audit = audit_labels(samples_for(given), probs, NORMAL)
    single = [f for f in audit.findings if f.kind == "single"]
    assert [(f.crops[0].label, f.crops[0].suggested) for f in single] == [("10", "9")]
    odds = 0.97 / (0.03 / 23)
    assert [f.kind for f in audit_labels(samples_for(given), probs, NORMAL, min_odds=odds * 1.01).findings] == ["exchange"]
    assert audit.to_dict()["findings_by_kind"] == {"shift": 0, "exchange": 1, "single": 1}
    with pytest.raises(ValueError, match="min_odds"):
        audit_labels(samples_for(given), probs, NORMAL, min_odds=0.5)


def test_findings_rank_strongest_first_across_cells_and_crops_without_a_cell_stand_alone():
    truth = CELL_46XY
    weak, strong = list(truth), list(truth)
    weak[truth.index("7")] = "8"
    strong[truth.index("1")] = "2"
    probs_weak = confident(truth, p=0.9)
    probs_strong = confident(truth, p=0.999)
    loose = [Sample(Path("loose.png"), "3", "c9", "unknown")]
    probs_loose = confident(["14"], p=0.8)
    samples = samples_for(weak, cell="1") + samples_for(strong, cell="2") + loose
    audit = audit_labels(samples, np.concatenate([probs_weak, probs_strong, probs_loose]), NORMAL)
    assert [(f.cell, f.crops[0].label, f.crops[0].suggested) for f in audit.findings] == [
        ("c1/2", "2", "1"), ("c1/1", "8", "7"), ("", "3", "14")]
    assert audit.cells == 2 and audit.crops == 93
    assert audit.findings[2].evidence == pytest.approx(math.log(0.8 / (0.2 / 23)))


def test_two_crops_one_place_off_are_not_a_shift():
    crops = [DisputedCrop("a", "c/1", "c", "5", "4", 3.0), DisputedCrop("b", "c/1", "c", "4", "5", 3.0),
             DisputedCrop("c", "c/1", "c", "9", "8", 4.0)]
    kinds = sorted((f.kind, tuple(c.path for c in f.crops)) for f in group_disputes(crops))
    assert kinds == [("exchange", ("b", "a")), ("single", ("c",))]
    # a third crop one place on makes the three a shift, and the 4 labelled 5's partner is gone
    findings = group_disputes(crops + [DisputedCrop("d", "c/1", "c", "21", "20", 2.0)])
    assert [(f.kind, [c.path for c in f.crops], f.offset) for f in findings] == [
        ("shift", ["a", "c", "d"], 1), ("single", ["b"], 0)]


def test_karyo_audit_lists_csv_draws_and_warns_on_trained_cases(tiny_bundle, tmp_path):
    root = tmp_path / "cells"
    root.mkdir()
    rng = np.random.default_rng(3)
    rows = ["path,label,case,cell"]
    for case in ("p1", "p2"):
        for k, truth in enumerate(CELL_46XY):
            label = truth
            if case == "p1" and truth in ("4", "5") and k % 2 == 0:
                label = "5" if truth == "4" else "4"  # one 4 and one 5 exchanged
            if case == "p2" and NORMAL24.index(truth) >= NORMAL24.index("19") and truth != "Y":
                label = NORMAL24[NORMAL24.index(truth) + 1]  # 19 .. X labelled one place on
            name = f"{case}_{k:02d}.png"
            assert cv2.imwrite(str(root / name), noisy_crop(NORMAL.index(truth), rng))
            rows.append(f"{name},{label},{case},m1")
    (root / "broken.png").write_bytes(b"not an image")
    rows.append("broken.png,7,p1,m1")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    out_csv, drawings = tmp_path / "audit.csv", tmp_path / "kg"
    runner = CliRunner()
    result = runner.invoke(app, ["audit", str(tiny_bundle.path), str(root), "--csv", str(out_csv),
                                 "--karyograms", str(drawings)])
    assert result.exit_code == 1, result.output  # the unreadable crop: said, and nothing else lost
    assert "broken.png" in result.stderr
    assert "audited 92 crops (2 cells read jointly); 11 read otherwise than labelled" in result.stdout
    assert "1 shift, 1 exchange, 0 single (11 crops)" in result.stdout
    assert "does not record its training cases" in result.stdout
    lines = [line for line in result.stdout.splitlines() if line.strip()[:2] in ("1.", "2.")]
    assert "p2/m1  shift" in lines[0] and "9 crops labelled 20 to Y" in lines[0]
    assert "p1/m1  exchange" in lines[1] and "labels 4 and 5 look exchanged" in lines[1]
    with open(out_csv, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 11 and {r["finding"] for r in table} == {"1", "2"}
    assert sorted((r["label"], r["suggested"]) for r in table if r["kind"] == "exchange") == [("4", "5"), ("5", "4")]
    assert all(float(r["evidence"]) > 0 for r in table) and not any(r["turned"] for r in table)  # read p arm up
    for finding in ("1", "2"):  # a finding is listed at 20:1 or more over its crops together
        assert sum(float(r["evidence"]) for r in table if r["finding"] == finding) >= math.log(20)
    pictures = sorted(p.name for p in drawings.iterdir())
    assert pictures == ["001_p2_m1.png", "002_p1_m1.png"]
    assert cv2.imread(str(drawings / pictures[0])).shape[1] > 400
    # a bundle that says it trained on p1: a warning names it, and the finding in p1 is marked
    bundle = load_bundle(tiny_bundle.path)
    trained = tmp_path / "trained-bundle"
    trained.mkdir()
    for file in tiny_bundle.path.glob("*.onnx"):
        (trained / file.name).write_bytes(file.read_bytes())
    manifest = bundle.manifest
    manifest.provenance = {**manifest.provenance, "training": {"case_digests": [case_digest("p1"), case_digest("q")]}}
    write_manifest(trained, manifest)
    (root / "broken.png").unlink()
    (root / "manifest.csv").write_text("\n".join(rows[:-1]) + "\n")
    result = runner.invoke(app, ["audit", str(trained), str(root), "--json"])
    assert result.exit_code == 0, result.output
    assert "warning: 1 of the 2 cases here were in this bundle's training data" in result.stderr
    document = json.loads(result.stdout)
    assert document["cases_seen_in_training"] == 1 and document["findings_by_kind"]["shift"] == 1
    exchange = document["findings"][1]
    assert exchange["kind"] == "exchange" and exchange["odds"] >= 20 and exchange["crops"][0]["case"] == "p1"
    assert exchange["odds"] == pytest.approx(math.prod(c["odds"] for c in exchange["crops"]), rel=1e-3)
    plain = runner.invoke(app, ["audit", str(trained), str(root)])
    assert "p1/m1 (trained on)  exchange" in plain.stdout and "p2/m1  shift" in plain.stdout
    # `karyo evaluate` says so too: figures on cases the model trained on are optimistic
    evaluated = runner.invoke(app, ["evaluate", str(trained), str(root), "--precision", "fp32", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert ("warning: 1 of the 2 cases here (46 crops) were in this bundle's training data: the figures are "
            "optimistic") in evaluated.stderr
    assert json.loads(evaluated.stdout)["cases_seen_in_training"] == {"cases": 1, "of": 2, "crops": 46}
    untold = runner.invoke(app, ["evaluate", str(tiny_bundle.path), str(root), "--precision", "fp32", "--json"])
    assert "training data" not in untold.stderr and "cases_seen_in_training" not in json.loads(untold.stdout)


def test_audit_with_any_draws_a_crop_read_turned_as_it_was_read(tiny_bundle, tmp_path, monkeypatch):
    """A cell cut out upside down, audited with `--orientation any`: its karyogram shows every crop p arm
    up, as `karyo karyotype` draws them, not as the files lie (bands upside down beside their label)."""
    root = tmp_path / "cells"
    root.mkdir()
    rng = np.random.default_rng(4)
    rows, upright = ["path,label,case,cell"], {}
    for k, truth in enumerate(CELL_46XY):
        label = {"4": "5", "5": "4"}.get(truth, truth) if k in (6, 8) else truth  # one 4 and one 5 exchanged
        crop = noisy_crop(NORMAL.index(truth), rng)
        upright[f"{k:02d}.png"] = crop
        assert cv2.imwrite(str(root / f"{k:02d}.png"), cv2.rotate(crop, cv2.ROTATE_180))
        rows.append(f"{k:02d}.png,{label},p1,m1")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    drawn: list[list[np.ndarray]] = []
    real_draw = karyogram.draw_karyogram

    def draw_and_keep(crops, *args, **kwargs):
        drawn.append(list(crops))
        return real_draw(crops, *args, **kwargs)

    monkeypatch.setattr(karyogram, "draw_karyogram", draw_and_keep)
    result = CliRunner().invoke(app, ["audit", str(tiny_bundle.path), str(root), "--orientation", "any", "--json",
                                      "--karyograms", str(tmp_path / "kg"), "--csv", str(tmp_path / "audit.csv")])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["orientation"] == "any" and document["findings"][0]["kind"] == "exchange"
    assert [c["turned"] for c in document["findings"][0]["crops"]] == [True, True]  # the files lie upside down
    with open(tmp_path / "audit.csv", newline="") as handle:
        assert [row["turned"] for row in csv.DictReader(handle)] == ["yes", "yes"]
    assert len(drawn) == 1 and len(drawn[0]) == 46
    spec = load_bundle(tiny_bundle.path).spec
    for name, crop in zip(sorted(upright), drawn[0]):
        expected = focused_crop(upright[name], spec).astype(np.float32)
        shown = crop.astype(np.float32)
        assert shown.shape == expected.shape
        # drawn as read: the upright crop, not the file's upside-down one
        assert np.abs(shown - expected).mean() < np.abs(shown - expected[::-1, ::-1]).mean()
