"""Reading crops either way up: the half turn, the two reads averaged, and the option through classifier, evaluate and CLI."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
from tiny_models import class_template
from typer.testing import CliRunner

from karyo.runtime.classifier import Classifier
from karyo.runtime.cli import app
from karyo.runtime.evaluate import evaluate_bundle
from karyo.runtime.orientation import both_ways_read, half_turn, orientation_hint, read_oriented
from karyo.runtime.preprocess import preprocess_path


def test_half_turn_puts_each_pixel_at_the_opposite_place_and_twice_is_identity():
    x = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3, 1)
    turned = half_turn(x)
    assert turned[0, 0, 0, 0] == x[0, 3, 2, 0] and turned[1, 3, 2, 0] == x[1, 0, 0, 0]
    assert turned[0, 1, 2, 0] == x[0, 2, 0, 0]
    np.testing.assert_array_equal(half_turn(turned), x)
    assert turned.flags["C_CONTIGUOUS"] and not np.shares_memory(turned, x)
    with pytest.raises(ValueError, match="NHWC"):
        half_turn(x[0])


def test_the_two_reads_are_averaged_and_the_clearer_says_which_way_the_crop_stood():
    given = np.array([[0.6, 0.4], [0.3, 0.7], [0.5, 0.5], [0.9, 0.1], [0.55, 0.45]])
    turned = np.array([[0.1, 0.9], [0.2, 0.8], [0.5, 0.5], [0.8, 0.2], [0.0, 1.0]])
    probs, stood_turned = both_ways_read(given, turned)
    assert stood_turned.tolist() == [True, True, False, False, True]  # a tie counts as standing as given
    np.testing.assert_allclose(probs, [[0.35, 0.65], [0.25, 0.75], [0.5, 0.5], [0.85, 0.15], [0.275, 0.725]])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="different shapes"):
        both_ways_read(given, turned[:2])


def test_p_arm_up_reads_once_and_any_reads_both_ways():
    calls: list[np.ndarray] = []

    def predict(x: np.ndarray) -> np.ndarray:
        calls.append(x)
        return np.stack([x[:, 0, 0, 0], 1.0 - x[:, 0, 0, 0]], axis=1)  # the top-left pixel says how much "class 0"

    x = np.zeros((2, 3, 2, 1), np.float32)
    x[0, 0, 0, 0], x[0, -1, -1, 0] = 0.2, 0.9  # the clear read is the turned one
    x[1, 0, 0, 0], x[1, -1, -1, 0] = 0.7, 0.5  # as given 0.7 : 0.3, turned 0.5 : 0.5
    probs, took = read_oriented(predict, x, "p-arm-up")
    assert len(calls) == 1 and not took.any()
    calls.clear()
    probs, took = read_oriented(predict, x, "any")
    assert len(calls) == 2 and took.tolist() == [True, False]
    np.testing.assert_allclose(probs, [[0.55, 0.45], [0.6, 0.4]], atol=1e-7)
    with pytest.raises(ValueError, match="p-arm-up, any"):
        read_oriented(predict, x, "sideways")


def _turned_crops(folder, labels, count: int = 6):
    """Class templates written upside down (turned 180 degrees), with their labels."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(count):
        path = folder / f"turned_{index}.png"
        cv2.imwrite(str(path), cv2.rotate(class_template(index), cv2.ROTATE_180))
        written.append((path, labels.labels[index]))
    return written


def test_a_turned_crop_is_read_right_only_when_either_way_up_is_allowed(tiny_bundle, labeled_crops, tmp_path):
    turned = _turned_crops(tmp_path / "turned", tiny_bundle.labels)
    paths = [p for p, _ in turned]
    truth = [label for _, label in turned]
    as_given = Classifier(tiny_bundle.path, precision="fp32", provider="cpu", threads=1)
    either = Classifier(tiny_bundle.path, precision="fp32", provider="cpu", threads=1, orientation="any")
    wrong_way = as_given.predict_paths(paths)
    assert sum(p.label == t for p, t in zip(wrong_way, truth)) <= 1  # band order reversed: another template
    read = either.predict_paths(paths)
    assert [p.label for p in read] == truth and all(p.turned for p in read)
    assert json.loads(json.dumps(read[0].to_dict()))["turned"] is True
    upright = [p for p, _ in labeled_crops[1]][:12]
    kept = either.predict_paths(upright)
    assert [p.label for p in kept] == [p.label for p in as_given.predict_paths(upright)]
    assert not any(p.turned for p in kept)
    # on tensors the rule is symmetric: a crop and its half turn get the very same probabilities
    x = np.stack([preprocess_path(p, tiny_bundle.spec) for p in upright])
    np.testing.assert_array_equal(either.predict_tensors(x), either.predict_tensors(half_turn(x)))
    reference, reference_turned = tiny_bundle.reference(x, "fp32"), tiny_bundle.reference(half_turn(x), "fp32")
    np.testing.assert_allclose(either.predict_tensors(half_turn(x)), (reference + reference_turned) / 2, atol=1e-5)
    assert either.describe()["orientation"] == "any"
    with pytest.raises(ValueError, match="orientation must be one of"):
        Classifier(tiny_bundle.path, provider="cpu", orientation="sideways")


def test_evaluate_and_the_cli_read_turned_crops_with_any(tiny_bundle, tmp_path):
    root = tmp_path / "data"
    for path, label in _turned_crops(tmp_path / "flat", tiny_bundle.labels, count=8):
        (root / label).mkdir(parents=True, exist_ok=True)
        path.rename(root / label / path.name)
    p_arm_up = evaluate_bundle(tiny_bundle.path, root, precision="fp32")
    either = evaluate_bundle(tiny_bundle.path, root, precision="fp32", orientation="any")
    assert either.reports["fp32"]["accuracy"] == 1.0 and p_arm_up.reports["fp32"]["accuracy"] <= 0.25
    assert either.to_dict()["orientation"] == "any" and p_arm_up.to_dict()["orientation"] == "p-arm-up"
    assert either.turned["fp32"].tolist() == [True] * 8 and not p_arm_up.turned["fp32"].any()  # which were read turned
    runner = CliRunner()
    done = runner.invoke(app, ["classify", str(tiny_bundle.path), str(root), "--precision", "fp32", "--provider", "cpu",
                               "--json", "--orientation", "any"])
    assert done.exit_code == 0, done.output
    document = json.loads(done.stdout)
    assert document["orientation"] == "any"
    assert all(row["turned"] and row["label"] in row["path"].split("/")[-2:] for row in document["results"])
    done = runner.invoke(app, ["evaluate", str(tiny_bundle.path), str(root), "--precision", "fp32", "--json",
                               "--orientation", "any"])
    assert done.exit_code == 0 and json.loads(done.stdout)["accuracy"] == 1.0
    bad = runner.invoke(app, ["classify", str(tiny_bundle.path), str(root), "--orientation", "sideways"])
    assert bad.exit_code == 2


def _male_cell(folder, labels, turned: bool):
    """One 46,XY cell of the tiny bundle's noisy class templates, each crop turned half a circle if asked."""
    from tiny_models import noisy_crop

    rng = np.random.default_rng(5)
    male = [c for c in labels.labels if c not in ("X", "Y") for _ in range(2)] + ["X", "Y"]
    for i, label in enumerate(male):
        crop = noisy_crop(labels.index(label), rng)
        (folder / label).mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(folder / label / f"{i}.png"), cv2.rotate(crop, cv2.ROTATE_180) if turned else crop)
    return folder


def test_karyotype_reads_an_upside_down_cell_with_any_and_says_which_crops_it_turned(tiny_bundle, tmp_path):
    cell = _male_cell(tmp_path / "cell", tiny_bundle.labels, turned=True)
    upright = _male_cell(tmp_path / "upright", tiny_bundle.labels, turned=False)
    runner = CliRunner()

    def call(folder, orientation: str, *extra: str):
        done = runner.invoke(app, ["karyotype", str(tiny_bundle.path), str(folder), "--precision", "fp32",
                                   "--provider", "cpu", "--orientation", orientation, *extra])
        assert done.exit_code == 0, done.output
        return done

    def right(rows) -> int:
        return sum(row["label"] == row["path"].split("/")[-2] for row in rows)

    as_given = json.loads(call(cell, "p-arm-up", "--json").stdout)["cells"][0]
    assert right(as_given["assignments"]) <= 12 and not any(row["turned"] for row in as_given["assignments"])
    either = json.loads(call(cell, "any", "--json").stdout)["cells"][0]
    assert either["karyotype"] == "46,XY" and right(either["assignments"]) == 46
    assert all(row["turned"] for row in either["assignments"])
    assert "46,XY  (46 crops, 46 read turned" in call(cell, "any").stdout
    upright_line = call(upright, "any").stdout
    assert "46,XY  (46 crops" in upright_line and "read turned" not in upright_line
    # the karyogram stands each crop read turned p arm up again: the same picture as the upright cell's
    # (read the same way, so the same probabilities and the same crops flagged for review)
    call(cell, "any", "--karyogram", str(tmp_path / "turned.png"))
    call(upright, "any", "--karyogram", str(tmp_path / "upright.png"))
    drawn, reference = (cv2.imread(str(tmp_path / name), cv2.IMREAD_GRAYSCALE) for name in ("turned.png", "upright.png"))
    assert drawn.shape == reference.shape
    from karyo.runtime.karyogram import title_band

    below = title_band(str(cell))  # under the call and the cell's name, which differs: the folders do
    assert np.abs(drawn[below:].astype(int) - reference[below:].astype(int)).max() <= 2


def test_a_bundle_trained_either_way_up_is_read_both_ways_unless_told_otherwise(tmp_path):
    from tiny_models import make_bundle

    flipped = make_bundle(tmp_path / "vflip", precisions=("fp32",), orientation="any")
    turned = _turned_crops(tmp_path / "turned", flipped.labels)
    paths, truth = [p for p, _ in turned], [label for _, label in turned]
    default = Classifier(flipped.path, precision="fp32", provider="cpu", threads=1)
    assert default.orientation == "any" and default.describe()["orientation"] == "any"
    assert [p.label for p in default.predict_paths(paths)] == truth
    told = Classifier(flipped.path, precision="fp32", provider="cpu", threads=1, orientation="p-arm-up")
    assert sum(p.label == t for p, t in zip(told.predict_paths(paths), truth)) <= 1
    root = tmp_path / "data"
    for path, label in turned:
        (root / label).mkdir(parents=True, exist_ok=True)
        path.rename(root / label / path.name)
    assert evaluate_bundle(flipped.path, root, precision="fp32").to_dict()["orientation"] == "any"
    runner = CliRunner()
    done = runner.invoke(app, ["classify", str(flipped.path), str(root), "--precision", "fp32", "--provider", "cpu"])
    assert done.exit_code == 0 and "orientation: any" in done.stderr
    done = runner.invoke(app, ["classify", str(flipped.path), str(root), "--precision", "fp32", "--provider", "cpu", "--json",
                               "--orientation", "p-arm-up"])
    assert json.loads(done.stdout)["orientation"] == "p-arm-up"
    evaluated = runner.invoke(app, ["evaluate", str(flipped.path), str(root), "--precision", "fp32", "--json"])
    assert json.loads(evaluated.stdout)["orientation"] == "any" and json.loads(evaluated.stdout)["accuracy"] == 1.0
    info = runner.invoke(app, ["info", str(flipped.path), "--json"])
    assert json.loads(info.stdout)["orientation"] == "any"
    assert "orientation: any" in runner.invoke(app, ["info", str(flipped.path)]).stdout


def test_an_unsure_cell_is_read_again_turned_and_a_hint_names_how_many_crops_read_more_clearly_so():
    def reads(tops: list[float]) -> np.ndarray:
        probs = np.full((len(tops), 4), 0.0)
        probs[:, 0] = tops
        probs[:, 1:] = ((1 - np.array(tops)) / 3)[:, None]
        return probs

    def never() -> np.ndarray:
        raise AssertionError("a sure cell, or one too small to say, must not be read again")

    assert orientation_hint(reads([0.9] * 12), never) is None  # mean top 0.9: sure
    assert orientation_hint(reads([0.5] * 9), never) is None  # 9 crops: too few to say
    unsure = reads([0.5] * 10)
    calls = []

    def turned_with(clearer: int):
        def read() -> np.ndarray:
            calls.append(clearer)
            return reads([0.9] * clearer + [0.4] * (10 - clearer))
        return read

    assert orientation_hint(unsure, turned_with(2)) is None  # 2 of 10: under the share of 0.3
    assert orientation_hint(unsure, turned_with(3)).startswith("3 of 10 crops read more clearly turned half a circle")
    assert "--orientation any" in orientation_hint(unsure, turned_with(7))
    assert calls == [2, 3, 7]
    with pytest.raises(ValueError, match="different shapes"):
        orientation_hint(unsure, lambda: reads([0.9] * 9))


def test_karyotype_and_evaluate_hint_at_a_cell_that_does_not_stand_p_arm_up_and_change_nothing(tiny_bundle, tmp_path):
    from karyo.runtime.cli_evaluate import format_report
    from karyo.runtime.dataset import Sample, read_labeled_folder

    cell = _male_cell(tmp_path / "cell", tiny_bundle.labels, turned=True)
    upright = _male_cell(tmp_path / "upright", tiny_bundle.labels, turned=False)
    runner = CliRunner()

    def call(folder, *extra: str):
        done = runner.invoke(app, ["karyotype", str(tiny_bundle.path), str(folder), "--precision", "fp32",
                                   "--provider", "cpu", "--json", *extra])
        assert done.exit_code == 0, done.output
        return done

    turned_read = call(cell)
    entry = json.loads(turned_read.stdout)["cells"][0]
    hinted = re.match(r"(\d+) of 46 crops read more clearly turned half a circle", entry["orientation_hint"])
    assert hinted and int(hinted.group(1)) == 46  # every crop is a class template turned half a circle
    assert f"warning: {entry['cell']}: {entry['orientation_hint']}" in turned_read.stderr
    plain = json.loads(call(cell, "--orientation", "p-arm-up").stdout)["cells"][0]
    assert plain["assignments"] == entry["assignments"]  # the hint changes nothing in the reading
    assert "orientation_hint" not in json.loads(call(upright).stdout)["cells"][0]
    assert "orientation_hint" not in json.loads(call(cell, "--orientation", "any").stdout)["cells"][0]
    samples = [Sample(s.path, s.label, "case1", "turned") for s in read_labeled_folder(cell)]
    samples += [Sample(s.path, s.label, "case1", "upright") for s in read_labeled_folder(upright)]
    result = evaluate_bundle(tiny_bundle.path, samples, precision="fp32")
    assert list(result.extra["orientation_hints"]) == ["case1/turned"]
    assert result.extra["orientation_hints"]["case1/turned"] == entry["orientation_hint"]
    assert "orientation: 1 of 2 cells seem not to stand p arm up (e.g. case1/turned: " in format_report(result)
    assert "orientation_hints" not in evaluate_bundle(tiny_bundle.path, samples, precision="fp32", orientation="any").extra


def test_predict_cell_checks_with_the_tensors_it_made_and_keeps_every_other_answer(tiny_bundle, tmp_path, monkeypatch):
    import karyo.runtime.classifier as classifier_module

    cell = _male_cell(tmp_path / "cell", tiny_bundle.labels, turned=True)
    paths = sorted(cell.rglob("*.png"))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    paths.insert(5, tmp_path / "bad.png")
    classifier = Classifier(tiny_bundle.path, precision="fp32", provider="cpu", warmup=False, workers=1)
    by_files = classifier.predict_paths(paths)
    good = [p for p in by_files if p.error is None]
    reread = classifier.orientation_hint([p.path for p in good], np.stack([p.probs for p in good]))
    assert reread is not None and reread.startswith("46 of 46 crops")  # an unsure cell, every crop clearer turned

    decoded: list[str] = []
    real_prepare = classifier_module.prepare_path

    def counted(path, spec):
        decoded.append(str(path))
        return real_prepare(path, spec)

    monkeypatch.setattr(classifier_module, "prepare_path", counted)
    predictions, hint = classifier.predict_cell(paths)
    assert sorted(decoded) == sorted(map(str, paths))  # every file decoded once: the check turned the tensors made
    assert hint == reread
    assert [(p.path, p.label, p.ok) for p in predictions] == [(p.path, p.label, p.ok) for p in by_files]
    assert not predictions[5].ok and all(np.allclose(a.probs, b.probs) for a, b in zip(predictions, by_files) if a.ok)

    upright = sorted(_male_cell(tmp_path / "upright", tiny_bundle.labels, turned=False).rglob("*.png"))
    assert classifier.predict_cell(upright)[1] is None
    both_ways = Classifier(tiny_bundle.path, precision="fp32", provider="cpu", warmup=False, orientation="any")
    assert both_ways.predict_cell(paths)[1] is None  # already read both ways: nothing to hint
