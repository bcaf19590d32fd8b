"""Bundles: written and read back, verified on load, rejected with the culprit named, replaced atomically."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from tiny_models import make_bundle

from karyo.runtime.bundle import MANIFEST, BundleError, Manifest, atomic_write_text, load_bundle, staged_folder, write_manifest
from karyo.runtime.labels import scheme
from karyo.runtime.preprocess import PreprocessSpec


@pytest.fixture
def bundle_dir(tmp_path) -> Path:
    metrics = {"int8": {"accuracy": 0.91, "agreement_with_fp32": 0.99}}
    return make_bundle(tmp_path / "b", scheme_name="seed32", size=12, precisions=("fp32", "int8"), metrics=metrics).path


def _edit_manifest(folder: Path, change) -> None:
    data = json.loads((folder / MANIFEST).read_text())
    change(data)
    (folder / MANIFEST).write_text(json.dumps(data))


def test_write_then_load_round_trips(bundle_dir):
    bundle = load_bundle(bundle_dir)
    assert bundle.labels == scheme("seed32") and len(bundle.labels) == 32
    assert bundle.spec == dataclasses.replace(PreprocessSpec(size=12), focus_main_object=False, tight_crop=False)
    assert bundle.available_precisions == ["fp32", "int8"]
    assert bundle.model_path("int8") == bundle_dir / "model.int8.onnx"
    assert bundle.metrics("int8") == {"accuracy": 0.91, "agreement_with_fp32": 0.99}
    assert set(bundle.manifest.files) == {"model.fp32.onnx", "model.int8.onnx"}
    data = json.loads((bundle_dir / MANIFEST).read_text())
    assert data["input"]["shape"] == [None, 12, 12, 1] and data["output"]["shape"] == [None, 32]
    assert data["orientation"] == "p-arm-up" == bundle.orientation


def test_orientation_round_trips_and_a_bundle_from_before_it_reads_p_arm_up(bundle_dir):
    _edit_manifest(bundle_dir, lambda d: d.update(orientation="any"))
    assert load_bundle(bundle_dir).orientation == "any"
    _edit_manifest(bundle_dir, lambda d: d.pop("orientation"))
    assert load_bundle(bundle_dir).orientation == "p-arm-up"


def test_missing_precision_names_what_the_bundle_has(bundle_dir):
    with pytest.raises(BundleError, match="no fp16 model in this bundle \\(it has fp32, int8\\)"):
        load_bundle(bundle_dir).model_path("fp16")


def test_flipped_byte_is_caught_naming_the_file(bundle_dir):
    target = bundle_dir / "model.int8.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.int8\.onnx: sha256 mismatch"):
        load_bundle(bundle_dir)
    assert load_bundle(bundle_dir, verify=False).available_precisions == ["fp32", "int8"]


def test_missing_file_is_named(bundle_dir):
    (bundle_dir / "model.fp32.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.fp32\.onnx: listed in the manifest but missing"):
        load_bundle(bundle_dir)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not a bundle folder"):
        load_bundle(tmp_path / "nothing")
    with pytest.raises(BundleError, match="manifest.json: missing"):
        load_bundle(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="unreadable"):
        load_bundle(tmp_path)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: d.update(schema_version=99), "schema_version 99"),
        (lambda d: d.pop("labels"), "malformed"),
        (lambda d: d.update(labels="normal24"), "malformed"),
        (lambda d: d.update(input=[]), "malformed"),
        (lambda d: d["precisions"].update(fp64={"file": "x.onnx"}), "bad precision entry 'fp64'"),
        (lambda d: d["precisions"]["int8"].update(file=7), "bad precision entry 'int8'"),
        (lambda d: d["precisions"]["int8"].update(file="../../etc/passwd"), "leaves the bundle folder"),
        (lambda d: d["files"].update({"/etc/passwd": "0" * 64}), "leaves the bundle folder"),
        (lambda d: d["preprocess"].update(size=0), "malformed"),
        (lambda d: d["labels"].update(names=["1", "1", "2"]), "malformed"),
        (lambda d: d["input"].update(layout="NCHW"), "unsupported input"),
        (lambda d: d.update(orientation="sideways"), "orientation 'sideways', this karyo reads p-arm-up, any"),
    ],
    ids=["schema", "no-labels", "labels-str", "input-list", "fp64", "file-int", "traversal", "abs-file", "size0", "dup-labels", "nchw",
         "orientation"],
)
def test_bad_manifest_is_a_bundle_error(bundle_dir, change, message):
    _edit_manifest(bundle_dir, change)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_dir)


def test_model_without_hash_is_refused(bundle_dir):
    _edit_manifest(bundle_dir, lambda d: d["files"].pop("model.int8.onnx"))
    with pytest.raises(BundleError, match="has no sha256"):
        load_bundle(bundle_dir)


def test_staged_folder_replaces_on_success_and_keeps_old_on_error(bundle_dir):
    before = (bundle_dir / MANIFEST).read_text()
    with pytest.raises(RuntimeError, match="quantization blew up"):
        with staged_folder(bundle_dir, start_from_existing=True) as stage:
            assert (stage / "model.fp32.onnx").is_file()  # the stage starts as a copy
            (stage / "model.int8.onnx").unlink()
            raise RuntimeError("quantization blew up")
    assert (bundle_dir / MANIFEST).read_text() == before
    assert load_bundle(bundle_dir).available_precisions == ["fp32", "int8"]
    assert [p.name for p in bundle_dir.parent.iterdir()] == [bundle_dir.name]  # no staging leftovers

    with staged_folder(bundle_dir, start_from_existing=True) as stage:
        manifest = load_bundle(stage).manifest
        (stage / "model.int8.onnx").unlink()
        manifest.precisions.pop("int8")
        write_manifest(stage, manifest)
    assert load_bundle(bundle_dir).available_precisions == ["fp32"]
    assert [p.name for p in bundle_dir.parent.iterdir()] == [bundle_dir.name]


def test_staged_folder_creates_a_new_bundle(tmp_path):
    target = tmp_path / "fresh"
    with staged_folder(target) as stage:
        (stage / "model.fp32.onnx").write_bytes(b"onnx bytes")
        write_manifest(stage, Manifest(scheme("normal24"), PreprocessSpec(), {"fp32": {"file": "model.fp32.onnx"}}))
    assert load_bundle(target).available_precisions == ["fp32"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_bundles_are_readable_by_other_users(tmp_path):
    """Temp folders/files are private (0700/0600); a finished bundle must get the normal umask modes."""
    old = os.umask(0o022)
    try:
        with staged_folder(tmp_path / "b") as stage:
            (stage / "x.bin").write_bytes(b"1")
            atomic_write_text(stage / "manifest.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "b" / "manifest.json").stat().st_mode & 0o777 == 0o644
