"""`karyo classify | evaluate | info`: output formats, exit codes 0/1/2, one-line errors, no tracebacks."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from tiny_models import make_bundle
from typer.testing import CliRunner

from karyo.runtime.cli import app
from karyo.runtime.preprocess import preprocess_path

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory, tiny_bundle):
    """Two good crops (classes 1 and X) plus a text file named .png."""
    from tiny_models import write_labeled_folder

    root = tmp_path_factory.mktemp("mixed")
    write_labeled_folder(root, tiny_bundle.labels, per_class=1, classes=[0, 22])
    (root / "1" / "broken.png").write_text("not a picture")
    return root


def test_classify_json_is_one_document_matching_the_model(tiny_bundle, labeled_crops):
    root, crops = labeled_crops
    result = invoke(
        "classify", tiny_bundle.path, root / "1", root / "X" / "c22_0.png", "--json", "--precision", "fp32", "--top-k", "2", "--provider", "cpu"
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["provider"] == "cpu" and document["precision"] == "fp32"
    rows = document["results"]
    assert [Path(r["path"]).name for r in rows] == ["c0_0.png", "c0_1.png", "c22_0.png"]
    assert [r["label"] for r in rows] == ["1", "1", "X"] and all(r["error"] is None for r in rows)
    tensors = np.stack([preprocess_path(r["path"], tiny_bundle.spec) for r in rows])
    expected = tiny_bundle.reference(tensors, "fp32")
    for row, probs in zip(rows, expected):
        assert len(row["top_k"]) == 2
        assert row["probability"] == pytest.approx(float(probs.max()), abs=1e-5)
        assert row["top_k"][1]["probability"] == pytest.approx(float(np.sort(probs)[-2]), abs=1e-5)


def test_classify_with_a_bad_file_exits_1_and_reports_it_everywhere(tiny_bundle, bad_folder):
    result = invoke("classify", tiny_bundle.path, bad_folder, "--json")
    assert result.exit_code == 1
    rows = json.loads(result.stdout)["results"]
    assert sorted(r["label"] or "ERR" for r in rows) == ["1", "ERR", "X"]
    (broken,) = [r for r in rows if r["error"]]
    assert broken["path"].endswith("broken.png") and broken["top_k"] == []
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "broken.png" in error_lines[0]


def test_classify_names_a_bright_on_dark_crop_and_reads_the_rest(tiny_bundle, labeled_crops, tmp_path):
    """A fluorescence or inverted crop among G-banded ones: one line naming it, the others labelled."""
    import shutil

    root, _ = labeled_crops
    crop = root / "1" / "c0_0.png"
    shutil.copy(crop, tmp_path / "g_banded.png")
    cv2.imwrite(str(tmp_path / "inverted.png"), 255 - cv2.imread(str(crop), cv2.IMREAD_GRAYSCALE))
    result = invoke("classify", tiny_bundle.path, tmp_path, "--json", "--provider", "cpu")
    assert result.exit_code == 1
    rows = {Path(r["path"]).name: r for r in json.loads(result.stdout)["results"]}
    assert rows["g_banded.png"]["label"] == "1" and rows["g_banded.png"]["error"] is None
    assert rows["inverted.png"]["label"] is None and "bright chromosome on a dark ground" in rows["inverted.png"]["error"]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "inverted.png" in line and "invert it to that first" in line


def test_classify_csv_and_table(tiny_bundle, bad_folder):
    result = invoke("classify", tiny_bundle.path, bad_folder, "--csv")
    assert result.exit_code == 1
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["path", "label", "probability", "top_k", "error"]
    assert {r["label"] for r in rows} == {"1", "X", ""}
    good = [r for r in rows if r["label"]]
    assert all(r["top_k"].split(";")[0].startswith(r["label"] + ":") and float(r["probability"]) > 0 for r in good)

    table = invoke("classify", tiny_bundle.path, bad_folder, "--provider", "cpu")
    assert table.exit_code == 1
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["path", "label", "prob"] and len(lines) == 4
    assert "provider: cpu" in table.stderr and "precision: int8" in table.stderr


def test_auto_reports_the_provider_the_session_really_got(tiny_bundle, labeled_crops):
    """CPU-only machine: cpu + int8 and the reason; GPU machine (checked on an H100): cuda + fp16, no reason."""
    from karyo.runtime.session import create_session, cuda_status

    _, used = create_session(tiny_bundle.path / "model.fp32.onnx", "auto")
    result = invoke("classify", tiny_bundle.path, labeled_crops[0] / "1", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["provider"] == used and document["precision"] == {"cpu": "int8", "cuda": "fp16"}[used]
    assert document["cuda_unavailable"] == (None if used == "cuda" else cuda_status())
    assert (document["cuda_unavailable"] is None) == (used == "cuda")


def test_cuda_request_with_the_gpu_hidden_is_one_short_line(tiny_bundle, labeled_crops):
    """A GPU taken away (here hidden) must not dump ORT's C++ call chain on the operator."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    crop = next((labeled_crops[0] / "1").iterdir())
    command = [sys.executable, "-m", "karyo.runtime.cli", "classify", str(tiny_bundle.path), str(crop), "--provider", "cuda"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: CUDA requested but unavailable: ") and line.endswith("or use --provider cpu")
    assert "onnxruntime_src" not in line and "std::" not in line and len(line) < 400


def test_classify_usage_errors_exit_2(tiny_bundle, tmp_path):
    crop = tmp_path / "x.png"
    crop.write_bytes(b"")
    cases = [
        (["classify", tmp_path / "no-bundle", crop], "not a bundle folder"),
        (["classify", tiny_bundle.path, crop, "--json", "--csv"], "choose one of --json and --csv"),
        (["classify", tiny_bundle.path, crop, "--provider", "cuda"], "CUDA requested but unavailable"),
    ]
    for args, message in cases:
        if "cuda" in args:
            from karyo.runtime.session import cuda_precheck

            if cuda_precheck() is None:
                continue
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.strip().splitlines()[-1].startswith("error: ") and message in result.stderr
        assert "Traceback" not in result.output
    assert invoke("classify", tiny_bundle.path, crop, "--precision", "fp64").exit_code == 2


def test_classify_empty_folder_is_an_item_error(tiny_bundle, tmp_path):
    result = invoke("classify", tiny_bundle.path, tmp_path, "--json")
    assert result.exit_code == 1
    (row,) = json.loads(result.stdout)["results"]
    assert "holds no PNG/TIFF/BMP/JPEG images" in row["error"]


def test_evaluate_json_matches_direct_computation(tiny_bundle, labeled_crops, tmp_path):
    root, crops = labeled_crops
    png = tmp_path / "confusion.png"
    result = invoke("evaluate", tiny_bundle.path, root, "--json", "--confusion", png)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["n"] == len(crops) == 48 and data["precision"] == "int8"
    tensors = np.stack([preprocess_path(p, tiny_bundle.spec) for p, _ in sorted(crops, key=lambda c: str(c[0]))])
    assert set(data["precisions"]) == {"fp32", "fp16", "int8"}
    y = np.array([tiny_bundle.labels.index(label) for _, label in sorted(crops, key=lambda c: str(c[0]))])
    fp32, int8 = tiny_bundle.reference(tensors, "fp32"), tiny_bundle.reference(tensors, "int8")
    assert data["accuracy"] == pytest.approx(float(np.mean(int8.argmax(1) == y)))
    agreement = float(np.mean(int8.argmax(1) == fp32.argmax(1)))
    assert data["precisions"]["int8"]["agreement_with_fp32"] == pytest.approx(agreement)
    assert data["precisions"]["int8"]["kl_to_fp32"] > 0 and "agreement_with_fp32" not in data["precisions"]["fp32"]
    matrix = np.array(data["confusion_matrix"])
    assert matrix.shape == (24, 24) and matrix.sum() == 48 and data["per_class"]["X"]["support"] == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = invoke("evaluate", tiny_bundle.path, root, "--precision", "fp16")
    assert table.exit_code == 0 and "per-class recall (fp16)" in table.stdout
    assert [line.split()[0] for line in table.stdout.splitlines()[3:4]] == ["fp16"]


def test_evaluate_one_precision(tiny_bundle, labeled_crops):
    data = json.loads(invoke("evaluate", tiny_bundle.path, labeled_crops[0], "--precision", "auto", "--json").stdout)
    assert data["precision"] == "int8" and list(data["precisions"]) == ["int8"]
    assert data["precisions"]["int8"]["agreement_with_fp32"] > 0.5  # fp32 still ran, as the reference


def test_evaluate_skips_labels_outside_the_scheme(tmp_path, labeled_crops):
    binary = make_bundle(tmp_path / "binary", scheme_name="binary:del(5)(p14)", precisions=("fp32",))
    from tiny_models import write_labeled_folder

    data_root = tmp_path / "data"
    write_labeled_folder(data_root, binary.labels, per_class=2)
    for label in ("1", "X"):
        src = labeled_crops[0] / label
        (data_root / label).mkdir()
        for f in src.iterdir():
            (data_root / label / f.name).write_bytes(f.read_bytes())
    result = invoke("evaluate", binary.path, data_root, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["n"] == 4 and data["skipped"]["labels_not_in_scheme"] == {"1": 2, "X": 2}
    assert invoke("evaluate", binary.path, labeled_crops[0] / "1").exit_code == 2  # nothing in scheme / no classes


def test_evaluate_bad_data_folder_exits_2(tiny_bundle, tmp_path):
    result = invoke("evaluate", tiny_bundle.path, tmp_path / "missing")
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "not a folder" in result.stderr


def test_info_shows_verified_contents(tmp_path):
    metrics = {"int8": {"accuracy": 0.875, "agreement_with_fp32": 0.99, "kl_to_fp32": 0.0012}}
    bundle = make_bundle(tmp_path / "b", precisions=("fp32", "int8"), metrics=metrics)
    data = json.loads(invoke("info", bundle.path, "--json").stdout)
    assert data["verified"] is True and data["labels"]["scheme"] == "normal24" and len(data["labels"]["names"]) == 24
    assert data["input"]["shape"] == [None, 16, 16, 1] and data["preprocess"]["size"] == 16
    assert data["precisions"]["int8"]["bytes"] == (bundle.path / "model.int8.onnx").stat().st_size
    assert data["precisions"]["int8"]["metrics"]["accuracy"] == 0.875
    assert data["auto_precision"] == {"cpu": "int8", "cuda": "fp32"}
    assert data["provenance"] == {"producer": "tests/tiny_models.py"}
    text = invoke("info", bundle.path)
    assert text.exit_code == 0 and "0.8750" in text.stdout and "sha256 OK" in text.stdout

    target = bundle.path / "model.int8.onnx"
    target.write_bytes(target.read_bytes()[:-1] + b"\x00")
    broken = invoke("info", bundle.path)
    assert broken.exit_code == 2 and broken.stderr.strip() == f"error: {target}: sha256 mismatch (file changed or corrupted since export)"


@pytest.mark.parametrize("command", ["classify", "evaluate", "info"])
def test_help_for_each_command(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Usage" in result.stdout and "BUNDLE" in result.stdout


def test_installed_entry_point_exit_codes_without_tracebacks(tiny_bundle, bad_folder, tmp_path):
    """The real console script, in a fresh process: what a scanner operator runs."""
    karyo = Path(sys.executable).with_name("karyo")
    command = [str(karyo)] if karyo.exists() else [sys.executable, "-m", "karyo.runtime.cli"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    partial = subprocess.run(command + ["classify", str(tiny_bundle.path), str(bad_folder), "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert partial.returncode == 1 and len(json.loads(partial.stdout)["results"]) == 3
    bad = subprocess.run(command + ["info", str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
