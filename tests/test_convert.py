"""Keras -> ONNX bundle: parity on real inputs, contract names, verified bundle, failure modes."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from test_models_train import make_tiny_dataset  # noqa: E402

from karyo.runtime.bundle import BundleError, case_digest, load_bundle  # noqa: E402
from karyo.runtime.dataset import read_labeled_folders  # noqa: E402
from karyo.runtime.evaluate import evaluate_bundle  # noqa: E402
from karyo.runtime.preprocess import preprocess_path  # noqa: E402


def test_parity_figures_and_failure():
    from karyo.export.onnx_export import ExportError, check_parity, parity

    keras_probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float64)
    good = parity(keras_probs, keras_probs + 1e-6)
    assert good["top1_agreement"] == 1.0 and good["max_abs_diff"] == pytest.approx(1e-6, rel=1e-2)
    check_parity(good)
    swapped = keras_probs[:, ::-1].copy()
    bad = parity(keras_probs, swapped)
    assert bad["top1_agreement"] == 0.0 and bad["decisive_disagreements"] == 2
    with pytest.raises(ExportError, match="does not match Keras"):
        check_parity(bad)
    with pytest.raises(ExportError, match="at least one"):
        check_parity(parity(keras_probs[:0], keras_probs[:0]))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from karyo.export.train import train_model

    root = tmp_path_factory.mktemp("convert")
    data = make_tiny_dataset(root / "data", cases=5, per_class=3)
    model_dir = train_model([data], root / "model", epochs=2, input_size=(32, 16), batch_size=16, progress=False)
    return root, data, model_dir


@pytest.mark.slow
def test_convert_writes_verified_bundle_with_parity(trained):
    import keras
    import onnx

    from karyo.export.convert import convert_model
    from karyo.export.data import sample_from_dict
    from karyo.export.onnx_export import onnx_probabilities

    root, data, model_dir = trained
    bundle_path = convert_model(model_dir, root / "bundle", precisions=("fp32",), progress=False, mirror=True)
    bundle = load_bundle(bundle_path)  # verifies every file's sha256
    assert bundle.available_precisions == ["fp32"]
    assert (bundle.spec.size, bundle.spec.width) == (32, 16) and list(bundle.labels.labels[:3]) == ["1", "2", "3"]
    graph = onnx.load(str(bundle.model_path("fp32"))).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["probabilities"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value") and [d.dim_value for d in dims[1:]] == [32, 16, 1]

    parity = bundle.metrics("fp32")["parity"]
    split = json.loads((model_dir / "split.json").read_text())
    assert parity["n"] == len(split["test"]) and parity["max_abs_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0
    # independent re-check on every crop (not only the held-out ones), at a batch size not used before
    samples = read_labeled_folders([data])
    x = np.stack([preprocess_path(s.path, bundle.spec) for s in samples])
    model = keras.models.load_model(model_dir / "model.keras", compile=False)
    plain = model.predict(x, batch_size=7, verbose=0)
    mirrored = model.predict(np.ascontiguousarray(x[:, :, ::-1]), batch_size=7, verbose=0)
    expected = (plain + mirrored) / 2  # the mirror graph averages each crop with its mirror image
    got = onnx_probabilities(bundle.model_path("fp32"), x, batch_size=5)
    assert np.max(np.abs(expected - got)) < 1e-4
    assert (expected.argmax(1) == got.argmax(1)).all()
    noise = np.random.default_rng(0).normal(0, 1, (4, *x.shape[1:])).astype(np.float32)  # far from symmetric
    graph_noise = onnx_probabilities(bundle.model_path("fp32"), noise)
    plain_noise = model.predict(noise, verbose=0)
    mirror_noise = (plain_noise + model.predict(np.ascontiguousarray(noise[:, :, ::-1]), verbose=0)) / 2
    off_mirror, off_plain = np.max(np.abs(mirror_noise - graph_noise)), np.max(np.abs(plain_noise - graph_noise))
    assert off_mirror < 1e-5 and off_plain > 20 * max(off_mirror, 1e-6)  # the mirror view really is in the graph
    assert bundle.manifest.provenance["test_time_augmentation"] == "mirror"
    single = load_bundle(convert_model(model_dir, root / "bundle-single", precisions=("fp32",), progress=False))
    assert np.max(np.abs(plain - onnx_probabilities(single.model_path("fp32"), x, batch_size=5))) < 1e-4
    assert single.manifest.provenance["test_time_augmentation"] is None
    # a network trained flipped upside down too says so: its bundle is read either way up by default
    assert single.orientation == "p-arm-up"
    flipped_dir = root / "model-vflip"
    shutil.copytree(model_dir, flipped_dir)
    config = json.loads((flipped_dir / "train_config.json").read_text())
    assert config["augment"]["vflip"] is False
    config["augment"]["vflip"] = True
    (flipped_dir / "train_config.json").write_text(json.dumps(config))
    flipped = load_bundle(convert_model(flipped_dir, root / "bundle-vflip", precisions=("fp32",), progress=False))
    assert flipped.orientation == "any" and flipped.metrics("fp32")["orientation"] == "any"
    assert single.metrics("fp32")["orientation"] == "p-arm-up"
    # its manifest accuracy is the one `karyo evaluate` re-measures with the bundle's own reading; on
    # this 2-epoch fixture both reads happen to give 0.333, so that the manifest is read both ways at
    # all is shown by test_calibration's `any` bundle (0.945 one way against 0.89 both ways)
    held_out = [sample_from_dict(d) for d in split["test"]]
    assert flipped.metrics("fp32")["accuracy"] == evaluate_bundle(flipped, held_out).reports["fp32"]["accuracy"]
    provenance = bundle.manifest.provenance
    assert provenance["arch"] == "edge" and provenance["parameters"] == model.count_params()
    assert {"tensorflow", "tf2onnx", "onnx"} <= set(provenance["versions"])
    assert provenance["training"]["data_roots"] == [str(data.resolve())]
    config = json.loads((model_dir / "train_config.json").read_text())
    assert provenance["training"]["cpu_kernels"] == config["cpu_kernels"] in ("onednn", "eigen")
    # the cases the network was fitted or early-stopped on, hashed: the runtime can tell which are new
    fitted = set(split["train_cases"]) | set(split["val_cases"])
    assert fitted and not fitted & set(split["test_cases"])
    assert provenance["training"]["case_digests"] == sorted(case_digest(c) for c in fitted)
    assert bundle.seen_in_training(split["test_cases"]) == set()
    assert bundle.seen_in_training(split["test_cases"] + split["train_cases"][:1]) == set(split["train_cases"][:1])


@pytest.mark.slow
def test_convert_all_precisions_with_explicit_eval_data(trained, tmp_path, monkeypatch):
    from karyo.export.convert import convert_model

    root, data, model_dir = trained
    monkeypatch.chdir(tmp_path)  # INT8 pre-processing must not leave debug models in the caller's folder
    bundle_path = convert_model(model_dir, root / "bundle_all", eval_data=data, calibration_data=data, progress=False)
    assert list(tmp_path.iterdir()) == []
    bundle = load_bundle(bundle_path)
    assert bundle.available_precisions[0] == "fp32" and "fp16" in bundle.available_precisions
    n_all = len(read_labeled_folders([data]))
    assert bundle.metrics("fp32")["n"] == n_all
    if "int8" not in bundle.available_precisions:  # the gate may refuse a 2-epoch model; it must say so
        assert "int8_rejected" in bundle.manifest.provenance
    (bundle_path / "model.fp32.onnx").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(bundle_path)


def test_convert_command_exits_1_when_int8_was_refused(tmp_path, monkeypatch):
    """A bundle that lacks a requested precision is written, but the command must not report success."""
    from tiny_models import make_bundle
    from typer.testing import CliRunner

    import karyo.export.convert as convert
    from karyo.export.cli import app
    from karyo.runtime.bundle import staged_folder, write_manifest

    def fake_convert(model_dir, out, precisions, **kwargs):
        make_bundle(out, precisions=("fp32", "fp16"))
        with staged_folder(out, start_from_existing=True) as stage:
            manifest = load_bundle(stage).manifest
            manifest.provenance["int8_rejected"] = "INT8 failed the gate: agreement 0.2100 < 0.99"
            write_manifest(stage, manifest)
        return out

    monkeypatch.setattr(convert, "convert_model", fake_convert)
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "model"), "--out", str(tmp_path / "b")])
    assert result.exit_code == 1, result.output
    assert "error: int8 not written: INT8 failed the gate: agreement 0.2100" in result.output
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "model"), "--out", str(tmp_path / "b"),
                                      "--precisions", "fp32,fp16"])
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_convert_refuses_a_folder_without_model(tmp_path):
    from karyo.export.convert import ConvertError, convert_model

    with pytest.raises(ConvertError, match="not a model folder"):
        convert_model(tmp_path, tmp_path / "bundle", progress=False)
    assert not (tmp_path / "bundle").exists()


@pytest.mark.slow
@pytest.mark.parametrize("arch,size", [("seed-dcnn", 40), ("edge", 48)])
def test_both_architectures_convert_with_parity(tmp_path, arch, size):
    from karyo.export.models import build_model
    from karyo.export.onnx_export import check_parity, keras_to_onnx, onnx_probabilities, parity

    model = build_model(arch, 24, size)
    path = keras_to_onnx(model, tmp_path / "model.onnx")
    x = np.random.default_rng(3).random((9, size, size, 1), dtype=np.float32)
    result = parity(model.predict(x, verbose=0), onnx_probabilities(path, x))
    check_parity(result)
    assert result["n"] == 9 and result["max_abs_diff"] < 1e-5
