"""karyo.calibration end to end: a small trained Keras CNN, exported to ONNX, quantized behind the gate.

The model is trained once per module on generated crops whose class is visible (band positions on
a rod), then every test builds its own bundle from the exported FP32 file, so tests do not depend
on each other or on their order.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")
pytest.importorskip("onnxconverter_common", reason="karyo.calibration needs the export extra (onnxconverter-common)")

from karyo.calibration import (  # noqa: E402
    GateConfig,
    GateFailedError,
    QuantizationConfig,
    add_low_precisions,
    format_drift_table,
    paths_sha256,
    quantize_bundle,
    select_stratified,
)
from karyo.calibration.data import TensorDataReader  # noqa: E402
from karyo.runtime.tensors import load_labeled_tensors  # noqa: E402
from karyo.runtime.bundle import Manifest, load_bundle, write_manifest  # noqa: E402
from karyo.runtime.dataset import Sample, read_labeled_folder  # noqa: E402
from karyo.runtime.labels import LabelScheme  # noqa: E402
from karyo.runtime.metrics import drift  # noqa: E402
from karyo.runtime.preprocess import PreprocessSpec  # noqa: E402
from karyo.runtime.session import create_session, run_probabilities  # noqa: E402

LABELS = LabelScheme("test4", ("1", "2", "3", "4"))
SPEC = PreprocessSpec(size=32)
# band rows (top, bottom) per class on a 44-px rod: the class is visible to a person and a small CNN
BANDS = {"1": [(8, 13)], "2": [(28, 33)], "3": [(8, 13), (28, 33)], "4": [(12, 15), (19, 22), (26, 29)]}


def draw_crop(label: str, rng: np.random.Generator) -> np.ndarray:
    """A rod with dark bands on white paper, jittered in position, contrast and noise."""
    image = np.full((48, 22), 245.0)
    shift = int(rng.integers(-3, 4))
    left = 6 + int(rng.integers(-1, 2))
    body = 185.0 + rng.normal(0, 10)
    image[3 + shift : 44 + shift, left : left + 10] = body
    for top, bottom in BANDS[label]:
        image[top + shift : bottom + shift, left : left + 10] = 70.0 + rng.normal(0, 15)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_crops(root: Path, cases: list[str], per_class: int, seed: int, contrast: float = 1.0) -> list[Sample]:
    """root/<case>/<label>/<i>.png, the folder-per-class layout labs use; `contrast` below 1 washes the
    crops out towards the paper (0: empty paper)."""
    rng = np.random.default_rng(seed)
    for case in cases:
        for label in LABELS.labels:
            folder = root / case / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                crop = 245.0 - (245.0 - draw_crop(label, rng)) * contrast
                cv2.imwrite(str(folder / f"{i}.png"), np.clip(np.round(crop), 0, 255).astype(np.uint8))
    return read_labeled_folder(root)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Sample]]:
    base = tmp_path_factory.mktemp("crops")
    return {
        "train": write_crops(base / "train", ["t1", "t2", "t3"], 30, seed=1),
        "calibration": write_crops(base / "calib", ["c1", "c2"], 20, seed=2),
        "evaluation": write_crops(base / "eval", ["e1", "e2"], 25, seed=3),
        "washed_out": write_crops(base / "washed", ["w1"], 10, seed=4, contrast=0.08),
        "blank": write_crops(base / "blank", ["b1"], 3, seed=5, contrast=0.0),
    }


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory: pytest.TempPathFactory, data: dict[str, list[Sample]]) -> Path:
    """Train the tiny CNN once and export it with tf2onnx (from_function: from_keras fails on Keras 3)."""
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    tf2onnx = pytest.importorskip("tf2onnx")
    keras.utils.set_random_seed(0)
    train = load_labeled_tensors(data["train"], SPEC, LABELS, progress=False)
    inputs = keras.Input(SPEC.input_shape, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(LABELS), activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train.x, train.y, epochs=12, batch_size=16, verbose=0, shuffle=True)

    @tf.function
    def serve(image):
        return {"probabilities": model(image, training=False)}

    path = tmp_path_factory.mktemp("model") / "model.fp32.onnx"
    signature = [tf.TensorSpec((None, *SPEC.input_shape), tf.float32, name="image")]
    tf2onnx.convert.from_function(serve, input_signature=signature, opset=17, output_path=str(path))
    return path


def make_stage(folder: Path, fp32_model: Path) -> tuple[Path, Manifest]:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fp32_model, folder / "model.fp32.onnx")
    manifest = Manifest(LABELS, SPEC, {"fp32": {"file": "model.fp32.onnx", "metrics": {}}}, {"model": "test"})
    return folder, manifest


def fast_config(**overrides) -> QuantizationConfig:
    return QuantizationConfig(measure_latency=False, **overrides)


def test_config_round_trips_through_json() -> None:
    config = QuantizationConfig(method="entropy", activation_type="QInt8", excluded_nodes=["Conv_3"],
                                gate=GateConfig(min_agreement=0.95, max_accuracy_drop=0.02))
    again = QuantizationConfig.from_json(config.to_json())
    assert again == config
    assert again.activation_type == "qint8"
    assert json.loads(config.to_json())["gate"] == {"min_agreement": 0.95, "max_accuracy_drop": 0.02, "tie_margin": 0.1,
                                                     "drop_significance": 0.05}
    with pytest.raises(ValueError, match="method"):
        QuantizationConfig(method="kmeans")
    with pytest.raises(ValueError, match="min_agreement"):
        GateConfig(min_agreement=1.5)
    with pytest.raises(ValueError, match="tie_margin"):
        GateConfig(tie_margin=1.0)
    # a manifest written before the margin existed still reads, with the default margin
    assert GateConfig.from_dict({"min_agreement": 0.99, "max_accuracy_drop": 0.005}).tie_margin == 0.1


def test_gate_check_names_each_failure() -> None:
    gate = GateConfig(min_agreement=0.99, max_accuracy_drop=0.005)
    assert gate.check({"agreement_with_fp32": 0.995, "accuracy": 0.90, "accuracy_fp32": 0.903}) == (True, [])
    passed, reasons = gate.check({"agreement_with_fp32": 0.98, "accuracy": 0.89, "accuracy_fp32": 0.90})
    assert not passed and len(reasons) == 2
    assert "0.9800" in reasons[0] and "1.00 points" in reasons[1]


def test_gate_reads_agreement_over_the_crops_fp32_reads_decisively() -> None:
    """A weak model's near-ties tip under any rounding; the gate must not read that as damage."""
    labels = ["a", "b", "c"]
    # four kinds of FP32 read, 25 crops each: top-1 margins 0.85, 0.02, 0.01 and 0.50
    reference = np.array([[0.90, 0.05, 0.05], [0.50, 0.48, 0.02], [0.34, 0.33, 0.33], [0.70, 0.20, 0.10]] * 25)
    y_true = np.array([0, 1, 0, 0] * 25)
    quantized = reference.copy()
    quantized[1::4] = [0.47, 0.51, 0.02]  # every 0.02 near-tie tips, to the true class
    figures = drift(quantized, reference, y_true, labels)
    assert figures["agreement_with_fp32"] == 0.75 and figures["accuracy"] - figures["accuracy_fp32"] == 0.25
    assert figures["right_to_wrong"] == 0 and figures["wrong_to_right"] == 25
    assert figures["tie_margin"] == 0.1 and figures["decisive_n"] == 50 and figures["decisive_agreement"] == 1.0
    assert GateConfig().gated_agreement(figures) == (1.0, 50)
    assert GateConfig().check(figures) == (True, [])
    # gating on every crop, as before the margin existed, refuses the same model
    every = drift(quantized, reference, y_true, labels, tie_margin=0.0)
    assert every["decisive_n"] == 100
    assert GateConfig(tie_margin=0.0).check(every) == (False, ["top-1 agreement 0.7500 < 0.9900"])
    # a flip of a decisive read is still caught: 1 of the 50
    broken = quantized.copy()
    broken[0] = [0.05, 0.90, 0.05]
    passed, reasons = GateConfig().check(drift(broken, reference, y_true, labels))
    assert not passed and reasons == ["top-1 agreement 0.9800 < 0.9900 on the 50 crops FP32 reads decisively"]
    # figures counted with another margin are not this gate's: it falls back to every crop
    assert GateConfig(tie_margin=0.2).gated_agreement(figures) == (0.75, None)
    # every crop a tie: nothing decisive to count, so every crop is gated
    ties = drift(quantized[1::4], reference[1::4], y_true[1::4], labels)
    assert ties["decisive_n"] == 0 and ties["decisive_agreement"] is None
    assert GateConfig().gated_agreement(ties) == (0.0, None)


def test_an_accuracy_drop_that_chance_flips_explain_passes_the_gate() -> None:
    """594 crops: 3 right answers lost on ties is 0.51 points, past 0.5, and a coin's work (p = 1/8)."""
    from karyo.calibration.config import drop_p_value

    base = {"agreement_with_fp32": 0.9933, "accuracy_fp32": 554 / 594, "accuracy": 551 / 594}
    chance = {**base, "right_to_wrong": 3, "wrong_to_right": 0}
    assert drop_p_value(chance) == 0.125
    assert drop_p_value({**base, "right_to_wrong": 4, "wrong_to_right": 1}) == 6 / 32
    assert drop_p_value({**base, "right_to_wrong": 0, "wrong_to_right": 0}) == 1.0 and drop_p_value(base) is None
    assert GateConfig().check(chance) == (True, [])
    # a drop too one-sided for chance fails: 9 lost, 1 gained (p = 11/1024)
    lopsided = {**base, "accuracy": 546 / 594, "right_to_wrong": 9, "wrong_to_right": 1}
    passed, reasons = GateConfig().check(lopsided)
    assert not passed and reasons == ["accuracy drop 1.35 points > 0.50 (9 right answers lost, 1 gained: sign test p = 0.011)"]
    # drop_significance 1 fails every drop past the limit; no counts: the drop alone decides
    assert GateConfig(drop_significance=1.0).check(chance)[0] is False
    assert GateConfig().check(base) == (False, ["accuracy drop 0.51 points > 0.50"])
    # within the limit no test is needed
    assert GateConfig().check({**base, "accuracy": 552 / 594, "right_to_wrong": 2, "wrong_to_right": 0}) == (True, [])
    with pytest.raises(ValueError, match="drop_significance"):
        GateConfig(drop_significance=0.0)


def test_stratified_selection_spreads_over_classes_and_cases() -> None:
    samples = [Sample(Path(f"/d/{case}/{label}/{i}.png"), label, case, "c")
               for label in ("1", "2", "3") for case in ("a", "b", "c", "d") for i in range(10)]
    samples += [Sample(Path(f"/d/a/4/{i}.png"), "4", "a", "c") for i in range(2)]  # a rare class
    chosen = select_stratified(samples, 26, seed=0)
    assert len(chosen) == 26 and len(set(chosen)) == 26
    per_class = {label: sum(s.label == label for s in chosen) for label in ("1", "2", "3", "4")}
    assert per_class["4"] == 2  # the rare class is all in, the rest split evenly
    assert sorted(per_class[label] for label in ("1", "2", "3")) == [8, 8, 8]
    for label in ("1", "2", "3"):
        cases = [s.case for s in chosen if s.label == label]
        assert max(cases.count(c) for c in set(cases)) == 2  # 8 crops over 4 cases, 2 each
    assert select_stratified(samples, 26, seed=0) == chosen
    assert select_stratified(samples, 1000, seed=0).__len__() == len(samples)
    assert paths_sha256(chosen) == paths_sha256(list(reversed(chosen)))


def test_data_reader_batches_and_rewinds() -> None:
    reader = TensorDataReader(np.zeros((70, 4, 4, 1), np.float32), "image", batch_size=32)
    sizes = [len(batch["image"]) for batch in iter(reader.get_next, None)]
    assert sizes == [32, 32, 6]
    reader.rewind()
    assert reader.get_next()["image"].shape == (32, 4, 4, 1)


def test_int8_and_fp16_pass_the_gate_with_recorded_drift(tmp_path, fp32_model, data) -> None:
    stage, manifest = make_stage(tmp_path / "bundle", fp32_model)
    result = add_low_precisions(stage, manifest, data["calibration"], data["evaluation"],
                                config=QuantizationConfig(), progress=False)
    assert (stage / "model.int8.onnx").is_file() and (stage / "model.fp16.onnx").is_file()
    fp32 = manifest.precisions["fp32"]["metrics"]
    assert fp32["accuracy"] >= 0.9, "the test model did not learn its visible classes"
    int8 = manifest.precisions["int8"]
    assert int8["metrics"]["agreement_with_fp32"] >= 0.99
    # past 0.5 points only as far as ties tipping explain: 2 right answers lost, none gained (p = 1/4)
    # on 200 crops with the 7-bit weights, on the AVX2 machine this was written on
    drop = int8["metrics"]["accuracy_fp32"] - int8["metrics"]["accuracy"]
    from karyo.calibration.config import drop_p_value

    assert drop <= 0.005 or (drop <= 0.015 and drop_p_value(int8["metrics"]) >= 0.05)
    assert int8["gate"]["status"] == "passed"
    assert int8["quantization"]["reduce_range"] is True  # right on every x86 CPU, VNNI or not
    assert int8["metrics"]["tie_margin"] == 0.1 and 0 < int8["metrics"]["decisive_n"] <= len(data["evaluation"])
    assert int8["metrics"]["decisive_agreement"] >= int8["metrics"]["agreement_with_fp32"] - 1e-12
    assert result["attempts"][0]["gated_agreement"] == int8["metrics"]["decisive_agreement"]
    assert result["attempts"][0]["gated_crops"] == int8["metrics"]["decisive_n"]
    metrics, first = int8["metrics"], result["attempts"][0]
    assert (first["right_to_wrong"], first["wrong_to_right"]) == (metrics["right_to_wrong"], metrics["wrong_to_right"])
    n = len(data["evaluation"])  # the changed truths are exactly what moves accuracy
    assert abs((metrics["wrong_to_right"] - metrics["right_to_wrong"]) / n - (metrics["accuracy"] - metrics["accuracy_fp32"])) < 1e-9
    assert int8["quantization"]["method"] == "minmax" and int8["quantization"]["per_channel"] is True
    assert int8["latency"]["batch1_ms"] > 0 and manifest.precisions["fp16"]["latency"]["batch1_ms"] > 0
    assert manifest.precisions["fp16"]["metrics"]["max_prob_diff"] < 0.01  # fp16 drift is tiny
    assert 0 < int8["metrics"]["max_prob_diff"] < 0.5  # int8 really differs, but little
    calibration = manifest.provenance["calibration"]
    assert calibration["count"] == min(200, len(data["calibration"]))
    assert calibration["sha256"] == paths_sha256(data["calibration"])
    assert manifest.provenance["evaluation"]["count"] == len(data["evaluation"])
    assert result["remedy"] == "as configured" and len(result["attempts"]) == 1
    table = result["table"]
    assert table.splitlines()[0].startswith("precision") and "int8" in table and "fp16" in table
    assert format_drift_table(manifest.precisions) == table
    # The QDQ model really holds integer weights.
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(stage / "model.int8.onnx")).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    producer = {out: node.op_type for node in graph.node for out in node.output}
    assert producer["probabilities"] == "Softmax"  # probabilities stay float, not rounded to 1/255


def test_manifest_drift_equals_a_recomputation_by_the_runtime(tmp_path, fp32_model, data) -> None:
    stage, manifest = make_stage(tmp_path / "bundle", fp32_model)
    add_low_precisions(stage, manifest, data["calibration"], data["evaluation"], config=fast_config(), progress=False)
    write_manifest(stage, manifest)
    bundle = load_bundle(stage)
    evaluation = load_labeled_tensors(data["evaluation"], bundle.spec, bundle.labels, progress=False)
    probs = {p: run_probabilities(create_session(bundle.model_path(p), "cpu")[0], evaluation.x, batch_size=64)
             for p in ("fp32", "fp16", "int8")}
    for precision in ("fp16", "int8"):
        recomputed = drift(probs[precision], probs["fp32"], evaluation.y, list(bundle.labels.labels))
        assert bundle.metrics(precision) == json.loads(json.dumps(recomputed))
    from karyo.runtime.evaluate import evaluate_bundle

    evaluated = evaluate_bundle(bundle, data["evaluation"], provider="cpu")
    for precision in ("fp16", "int8"):
        assert json.loads(json.dumps(evaluated.drift[precision])) == bundle.metrics(precision)
    assert evaluated.reports["fp32"]["accuracy"] == bundle.metrics("fp32")["accuracy"]


def test_a_bundle_read_both_ways_has_its_figures_and_gate_read_both_ways(tmp_path, fp32_model, data) -> None:
    from karyo.runtime.evaluate import evaluate_bundle

    stage, manifest = make_stage(tmp_path / "bundle", fp32_model)
    manifest.orientation = "any"
    add_low_precisions(stage, manifest, data["calibration"], data["evaluation"], config=fast_config(), progress=False)
    write_manifest(stage, manifest)
    bundle = load_bundle(stage)
    assert bundle.manifest.provenance["evaluation"]["orientation"] == "any"
    either = evaluate_bundle(bundle, data["evaluation"], provider="cpu")  # the bundle's own: both ways
    assert either.to_dict()["orientation"] == "any"
    for precision in ("fp16", "int8"):
        assert json.loads(json.dumps(either.drift[precision])) == bundle.metrics(precision)
    assert either.reports["fp32"]["accuracy"] == bundle.metrics("fp32")["accuracy"]
    # this network learnt its bands p arm up: read both ways it is measurably worse, and the
    # manifest says so rather than the one-way figure
    one_way = evaluate_bundle(bundle, data["evaluation"], provider="cpu", orientation="p-arm-up")
    assert one_way.reports["fp32"]["accuracy"] - bundle.metrics("fp32")["accuracy"] > 0.02  # 0.945 against 0.89 here


def test_washed_out_calibration_fails_the_gate_and_writes_no_int8(tmp_path, fp32_model, data) -> None:
    stage, manifest = make_stage(tmp_path / "bundle", fp32_model)
    config = fast_config()
    with pytest.raises(GateFailedError, match="agreement") as failure:
        add_low_precisions(stage, manifest, data["washed_out"], data["evaluation"], config=config, progress=False)
    assert not (stage / "model.int8.onnx").exists()
    assert "int8" not in manifest.precisions
    attempts = failure.value.report["attempts"]
    remedies = [a["remedy"] for a in attempts]
    assert remedies[0] == "as configured"
    assert {a["method"] for a in attempts} == {"minmax", "entropy", "percentile"}
    kept = [a for a in attempts if a["remedy"].startswith("kept ")]
    budget = manifest.provenance["calibration"]["exclusion_budget"]
    assert kept and budget == {"compute_nodes": 1, "of": 4}  # 3 convolutions + 1 dense layer
    # the exclusion budget caps the conv/matmul nodes kept in float at 1, however many others are kept
    compute_kept = [int(re.search(r"(\d+) of them conv/matmul", a["remedy"]).group(1)) for a in kept]
    assert max(compute_kept) == 1 and all(n <= 1 for n in compute_kept), [a["remedy"] for a in kept]
    assert all(not a["passed"] and a["agreement_with_fp32"] < 0.99 for a in attempts)
    assert manifest.provenance["calibration"]["gate"]["status"] == "failed"
    assert manifest.provenance["calibration"]["sensitive_tensors"][0]["nodes"]
    # Why it fails: crops washed out to 8% of their contrast fill a sliver of the input range (the
    # darkest band, 70 on paper at 245, becomes 231: 0.094 after inversion), so the input range and
    # every layer's range are calibrated far too narrow and real crops saturate.
    span = re.search(r"calibration crops span (\d\.\d{3}) of input range against (\d\.\d{3})", str(failure.value))
    assert span and 0.05 < float(span.group(1)) < 0.12 and float(span.group(2)) > 0.6, str(failure.value)


def test_blank_calibration_crops_are_refused_by_name_before_quantizing(tmp_path, fp32_model, data) -> None:
    stage, manifest = make_stage(tmp_path / "bundle", fp32_model)
    with pytest.raises(ValueError, match="no usable calibration crops") as refused:
        add_low_precisions(stage, manifest, data["blank"], data["evaluation"], config=fast_config(), progress=False)
    assert f"{data['blank'][0].path.parent.parent}" in str(refused.value)
    assert "no chromosome in the image" in str(refused.value)
    assert not (stage / "model.int8.onnx").exists() and "int8" not in manifest.precisions


def test_requantize_keeps_bundle_verified_and_a_failure_leaves_it_intact(tmp_path, fp32_model, data) -> None:
    stage, manifest = make_stage(tmp_path / "bundle", fp32_model)
    write_manifest(stage, manifest)
    quantize_bundle(stage, data["calibration"], data["evaluation"], fast_config(), progress=False)
    bundle = load_bundle(stage)
    assert bundle.available_precisions == ["fp32", "fp16", "int8"]
    before = {p.name: p.read_bytes() for p in stage.iterdir()}
    with pytest.raises(GateFailedError):
        quantize_bundle(stage, data["washed_out"], data["evaluation"], fast_config(remedies=False), progress=False)
    assert {p.name: p.read_bytes() for p in stage.iterdir()} == before
    assert load_bundle(stage).available_precisions == ["fp32", "fp16", "int8"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folder left behind"
    # a second good run with another method replaces the INT8 model and stays verified
    result = quantize_bundle(stage, data["calibration"], data["evaluation"], fast_config(method="percentile"), progress=False)
    assert load_bundle(stage).manifest.precisions["int8"]["quantization"]["method"] == result["attempts"][-1]["method"]


def test_quantize_command_updates_a_bundle_and_exits_2_on_gate_failure(tmp_path, fp32_model, data) -> None:
    typer_testing = pytest.importorskip("typer.testing")
    from karyo.export.cli import app

    stage, manifest = make_stage(tmp_path / "bundle", fp32_model)
    write_manifest(stage, manifest)
    quantize_bundle(stage, data["calibration"], data["evaluation"], fast_config(), progress=False)
    calibration_root = data["calibration"][0].path.parents[2]
    runner = typer_testing.CliRunner()
    # no --eval-data: the evaluation folder recorded in the manifest is read again
    ok = runner.invoke(app, ["quantize", str(stage), "--calibration-data", str(calibration_root), "--method", "percentile",
                             "--tie-margin", "0", "--drop-significance", "1"])
    assert ok.exit_code == 0, ok.output
    assert "int8" in ok.output and "agree" in ok.output and "decisive" in ok.output
    config = load_bundle(stage).manifest.provenance["calibration"]["config"]
    assert config["method"] == "percentile" and config["gate"]["tie_margin"] == 0.0
    assert config["gate"]["drop_significance"] == 1.0
    refused = runner.invoke(app, ["quantize", str(stage), "--drop-significance", "0"])  # before any calibration
    assert refused.exit_code == 2 and "drop_significance must lie in (0, 1], got 0.0" in refused.stderr
    # with a zero margin every crop is decisive, and the figures say so
    int8 = load_bundle(stage).metrics("int8")
    assert int8["tie_margin"] == 0.0 and int8["decisive_n"] == int8["n"]
    from karyo.runtime.evaluate import evaluate_bundle  # re-measures with the margin the gate used

    assert json.loads(json.dumps(evaluate_bundle(stage, data["evaluation"], provider="cpu").drift["int8"])) == int8
    before = (stage / "manifest.json").read_bytes()
    washed_root = data["washed_out"][0].path.parents[2]
    failed = runner.invoke(app, ["quantize", str(stage), "--calibration-data", str(washed_root), "--max-accuracy-drop", "0.01"])
    assert failed.exit_code == 2
    assert "INT8 failed the gate" in failed.output and "bundle left unchanged" in failed.output
    assert (stage / "manifest.json").read_bytes() == before
    bad = runner.invoke(app, ["quantize", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "not a bundle folder" in bad.output


def test_a_failing_method_is_remedied_by_the_next_and_reported(tmp_path, fp32_model, data) -> None:
    """Percentile 60 clips 40% of every activation's range: the gate rejects it and MinMax takes over."""
    stage, manifest = make_stage(tmp_path / "bundle", fp32_model)
    config = fast_config(method="percentile", percentile=60.0)
    result = add_low_precisions(stage, manifest, data["calibration"], data["evaluation"], ("int8",), config, progress=False)
    first, last = result["attempts"][0], result["attempts"][-1]
    assert first["method"] == "percentile" and not first["passed"] and first["agreement_with_fp32"] < 0.99
    assert last["passed"] and last["remedy"] == "other calibration method: minmax"
    assert manifest.precisions["int8"]["quantization"]["method"] == "minmax"
    assert manifest.precisions["int8"]["gate"]["remedy"] == "other calibration method: minmax"
    assert manifest.provenance["calibration"]["attempts"] == result["attempts"]
    assert "fp16" not in manifest.precisions and (stage / "model.int8.onnx").is_file()


def kernel_error(model: Path, tensors: np.ndarray) -> float:
    """Largest probability difference between onnxruntime's integer kernels and the same graph in float."""
    import onnxruntime as ort

    outputs = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {session.get_inputs()[0].name: tensors})[0])
    return float(np.abs(outputs[0] - outputs[1]).max())


def test_int8_kernels_compute_what_the_quantized_graph_means(tmp_path, fp32_model, data) -> None:
    """The default INT8 model reads the same on any CPU: its integer kernels equal the QDQ graph run in float.

    With full-range weights an AVX2 CPU (no VNNI) overflows: measured on this model, 9% of the
    evaluation crops read differently and the largest probability moved by 0.60. A VNNI CPU
    computes both right, so the default must be the one that holds on both.
    """
    stage, manifest = make_stage(tmp_path / "bundle", fp32_model)
    add_low_precisions(stage, manifest, data["calibration"], data["evaluation"], config=fast_config(), progress=False)
    evaluation = load_labeled_tensors(data["evaluation"], SPEC, LABELS, progress=False)
    assert kernel_error(stage / "model.int8.onnx", evaluation.x) <= 0.02  # 0.0000 measured, on AVX2


def full_range_bundle(tmp_path: Path, fp32_model: Path, data: dict[str, list[Sample]]) -> Path:
    """A bundle quantized as karyo did before 7-bit weights, its gate opened (it may overflow here)."""
    stage, manifest = make_stage(tmp_path / "bundle", fp32_model)
    config = fast_config(reduce_range=False, remedies=False, gate=GateConfig(min_agreement=0.0, max_accuracy_drop=1.0))
    add_low_precisions(stage, manifest, data["calibration"], data["evaluation"], config=config, progress=False)
    write_manifest(stage, manifest)
    return stage


def test_a_full_range_int8_model_is_refused_where_the_cpu_overflows_on_it(tmp_path, fp32_model, data, monkeypatch) -> None:
    from karyo.runtime import int8_check
    from karyo.runtime.bundle import BundleError
    from karyo.runtime.classifier import Classifier
    from karyo.runtime.evaluate import evaluate_bundle

    path = full_range_bundle(tmp_path, fp32_model, data)
    bundle = load_bundle(path)
    assert int8_check.full_range_int8(bundle.manifest.precisions["int8"])
    # what this CPU really does decides: an AVX2 CPU overflows, and the model reads differently there
    overflows = int8_check.cpu_overflows_uint8_int8()
    evaluation = load_labeled_tensors(data["evaluation"], SPEC, LABELS, progress=False)
    if overflows:
        assert kernel_error(bundle.model_path("int8"), evaluation.x) > 0.1  # 0.60 measured on an AMD EPYC, AVX2
    classifier = Classifier(bundle, provider="cpu")
    if overflows:
        assert classifier.precision == "fp32" and "overflows" in classifier.precision_reason
        assert "karyo-export quantize BUNDLE --reduce-range" in classifier.warning
    else:  # a VNNI CPU: the model means what it computes
        assert classifier.precision == "int8" and classifier.warning is None

    # the decision itself, on any CPU: an overflowing CPU gets FP32 under auto, and an explicit int8 is refused
    monkeypatch.setattr(int8_check, "cpu_overflows_uint8_int8", lambda: True)
    auto = Classifier(bundle, provider="cpu")
    assert auto.precision == "fp32" and auto.describe()["warning"].startswith(str(bundle.model_path("int8")))
    assert "no VNNI" in auto.warning and "Serving fp32 meanwhile" in auto.warning
    with pytest.raises(BundleError, match="full-range int8 weights overflow.*choose --precision fp32"):
        Classifier(bundle, precision="int8", provider="cpu")
    assert Classifier(bundle, precision="fp16", provider="cpu").warning is None  # only INT8 is probed
    # on the command line: one warning line and the crop still classified; an explicit int8 exits 2 in one line
    typer_testing = pytest.importorskip("typer.testing")
    from karyo.runtime.cli import app

    crop = str(data["evaluation"][0].path)
    served = typer_testing.CliRunner().invoke(app, ["classify", str(path), crop, "--provider", "cpu", "--json"])
    assert served.exit_code == 0, served.output
    assert served.stderr.count("warning: ") == 1 and "--reduce-range" in served.stderr
    assert json.loads(served.stdout)["precision"] == "fp32" and json.loads(served.stdout)["results"][0]["label"]
    refused = typer_testing.CliRunner().invoke(app, ["classify", str(path), crop, "--provider", "cpu", "--precision", "int8"])
    assert refused.exit_code == 2 and refused.stdout == ""
    assert refused.stderr.strip().count("\n") == 0 and refused.stderr.startswith("error: ") and "no VNNI" in refused.stderr
    # `karyo info` names what auto really serves on this CPU, not what it would prefer
    info = typer_testing.CliRunner().invoke(app, ["info", str(path), "--json"])
    assert info.exit_code == 0, info.output
    shown = json.loads(info.stdout)
    assert shown["auto_precision"]["cpu"] == "fp32" and shown["auto_precision"]["cuda"] != "fp32"
    assert "no VNNI" in shown["warning"] and info.stderr.count("warning: ") == 1
    # evaluate still measures what this CPU computes, and says why INT8 lags
    evaluated = evaluate_bundle(bundle, data["evaluation"], provider="cpu")
    assert "no VNNI" in evaluated.to_dict()["int8_overflow"]


def test_bench_times_a_full_range_int8_model_but_says_this_cpu_misreads_it(tmp_path, fp32_model, data, monkeypatch) -> None:
    """A bench of INT8 where the CPU overflows still times the kernels (7-bit weights run the same
    ones) but must not pass for a sound model: one warning line, and the record marked."""
    from karyo.runtime import int8_check
    from karyo.runtime.bench import benchmark_bundle

    path = full_range_bundle(tmp_path, fp32_model, data)
    monkeypatch.setattr(int8_check, "cpu_overflows_uint8_int8", lambda: True)
    result = benchmark_bundle(path, batch_sizes=[1, 4], precisions=["fp32", "int8"], provider="cpu", iterations=3)
    assert len(result["warnings"]) == 1 and "no VNNI" in result["warnings"][0]
    marked = {(r["precision"], r["batch_size"]): r.get("int8_overflow", False) for r in result["records"]}
    assert marked == {("fp32", 1): False, ("fp32", 4): False, ("int8", 1): True, ("int8", 4): True}
    assert all(r["p50_ms"] > 0 for r in result["records"])  # timed all the same

    typer_testing = pytest.importorskip("typer.testing")
    from karyo.runtime.cli import app

    args = ["bench", str(path), "-p", "int8", "--provider", "cpu", "--batch-sizes", "1", "--iterations", "3"]
    shown = typer_testing.CliRunner().invoke(app, args + ["--json"])
    assert shown.exit_code == 0, shown.output
    assert shown.stderr.count("warning: ") == 1 and "--reduce-range" in shown.stderr
    assert json.loads(shown.stdout)["records"][0]["int8_overflow"] is True
    # a CPU that sums right: nothing said, nothing marked
    monkeypatch.setattr(int8_check, "cpu_overflows_uint8_int8", lambda: False)
    quiet = typer_testing.CliRunner().invoke(app, args)
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr and "int8" in quiet.stdout


def test_a_7_bit_int8_model_is_not_probed(tmp_path, fp32_model, data, monkeypatch) -> None:
    from karyo.runtime import int8_check
    from karyo.runtime.classifier import Classifier

    stage, manifest = make_stage(tmp_path / "bundle", fp32_model)
    add_low_precisions(stage, manifest, data["calibration"], data["evaluation"], config=fast_config(), progress=False)
    write_manifest(stage, manifest)
    probed: list[int] = []
    monkeypatch.setattr(int8_check, "cpu_overflows_uint8_int8", lambda: probed.append(1) or True)
    classifier = Classifier(stage, provider="cpu")
    assert classifier.precision == "int8" and classifier.warning is None and probed == []
    from karyo.runtime.cli_info import bundle_info

    shown = bundle_info(stage)
    assert shown["auto_precision"]["cpu"] == "int8" and shown["warning"] is None and probed == []


def test_quantize_reduce_range_mends_a_full_range_bundle(tmp_path, fp32_model, data) -> None:
    """The remedy the runtime names: one `quantize --reduce-range`, calibrated on the lab's crops."""
    typer_testing = pytest.importorskip("typer.testing")
    from karyo.export.cli import app
    from karyo.runtime import int8_check

    stage = full_range_bundle(tmp_path, fp32_model, data)
    calibration_root = data["calibration"][0].path.parents[2]
    mended = typer_testing.CliRunner().invoke(app, ["quantize", str(stage), "--calibration-data", str(calibration_root),
                                                    "--reduce-range", "--min-agreement", "0.99", "--max-accuracy-drop", "0.005"])
    assert mended.exit_code == 0, mended.output
    bundle = load_bundle(stage)
    assert bundle.manifest.provenance["calibration"]["config"]["reduce_range"] is True
    assert bundle.manifest.precisions["int8"]["quantization"]["reduce_range"] is True
    assert not int8_check.full_range_int8(bundle.manifest.precisions["int8"])
