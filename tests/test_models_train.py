"""Architectures, case-wise splitting, augmentation and a one-epoch training run on tiny data."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from karyo.export.models import ONEDNN_MACHINES  # noqa: E402
from karyo.runtime.dataset import Sample, read_labeled_folders  # noqa: E402
from karyo.runtime.preprocess import PreprocessSpec  # noqa: E402

TINY_LABELS = ("1", "2", "X")


def make_tiny_dataset(root: Path, cases: int = 4, per_class: int = 4, seed: int = 0) -> Path:
    """Folder-per-class PNG crops (`<case>/<label>/*.png`): white background, a dark rod whose
    band sits at a class-specific height, so a small CNN can learn it in a few epochs."""
    rng = np.random.default_rng(seed)
    band_rows = {"1": 8, "2": 26, "X": 44}
    for c in range(cases):
        for label in TINY_LABELS:
            folder = root / f"patient-{chr(97 + c)}" / label
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                image = np.full((60, 24), 245, np.uint8)
                image[4:56, 7:17] = 190
                row = band_rows[label] + int(rng.integers(-2, 3))
                image[row : row + 8, 7:17] = 40
                noise = rng.normal(0, 4, image.shape)
                cv2.imwrite(str(folder / f"crop{k}.png"), np.clip(image + noise, 0, 255).astype(np.uint8))
    return root


def _samples(n_cases: int, per_case: int, labels=("1", "2", "3")) -> list[Sample]:
    return [
        Sample(Path(f"/x/{c}/{i}.png"), labels[i % len(labels)], f"case{c:02d}", "1")
        for c in range(n_cases)
        for i in range(per_case)
    ]


# ---------------------------------------------------------------- splits


def test_case_split_never_mixes_cases_and_keeps_every_class_in_train():
    from karyo.export.data import case_split

    samples = _samples(20, 9)
    # one rare class held by a single case: it must stay on the train side
    samples += [Sample(Path("/x/rare.png"), "Y", "case07", "1")]
    for seed in range(5):
        train, test = case_split(samples, 0.25, seed)
        assert {s.case for s in train}.isdisjoint({s.case for s in test})
        assert len(train) + len(test) == len(samples)
        assert {s.label for s in train} == {s.label for s in samples}
        assert 0.15 <= len(test) / len(samples) <= 0.40
    assert case_split(samples, 0.25, 1) == case_split(samples, 0.25, 1)
    assert case_split(samples, 0.25, 1) != case_split(samples, 0.25, 2)


def test_case_split_of_a_single_case_puts_everything_in_train():
    from karyo.export.data import case_split

    train, test = case_split(_samples(1, 6), 0.3, 0)
    assert len(train) == 6 and test == []


def test_case_folds_test_every_case_once_with_even_sizes():
    from karyo.export.data import case_folds

    samples = _samples(11, 5) + _samples(1, 12, labels=("4",))  # one big case
    folds = case_folds(samples, 3, seed=0)
    assert len(folds) == 3
    tested = [s.case for _, test in folds for s in test]
    assert sorted(set(tested)) == sorted({s.case for s in samples})
    seen_cases = [c for _, test in folds for c in {s.case for s in test}]
    assert len(seen_cases) == len(set(seen_cases))  # each case tested exactly once
    for train, test in folds:
        assert {s.case for s in train}.isdisjoint({s.case for s in test})
        assert len(train) + len(test) == len(samples)
    sizes = [len(test) for _, test in folds]
    assert max(sizes) - min(sizes) <= 12
    with pytest.raises(ValueError, match="at least 5 cases"):
        case_folds(_samples(4, 3), 5)


# ---------------------------------------------------------------- augmentation


def test_augmenter_keeps_shape_background_and_varies_images():
    from karyo.export.augment import AugmentConfig, Augmenter

    spec = PreprocessSpec(size=32)
    batch = np.zeros((4, 32, 32, 1), np.float32)
    batch[:, 6:26, 12:20, 0] = 0.8
    # no neighbour pieces here: they enter through the edges on purpose (tested on their own below)
    augmenter = Augmenter(spec, AugmentConfig(noise_std=0.0, brightness=0.0, neighbour_probability=0.0), seed=1)
    out = augmenter(batch)
    assert out.shape == batch.shape and out.dtype == np.float32
    assert np.abs(out[:, :2, :2]).max() < 1e-6  # corners stay background (0 for inverted crops)
    assert not np.allclose(out[0], out[1])
    assert abs(out.sum() - batch.sum()) / batch.sum() < 0.35  # the object is moved, not lost
    same = Augmenter(spec, AugmentConfig(noise_std=0.0, brightness=0.0, neighbour_probability=0.0), seed=1)(batch)
    np.testing.assert_array_equal(out, same)


def test_augmenter_simulates_a_coarser_scanner_and_other_band_contrast():
    from karyo.export.augment import AugmentConfig, Augmenter

    spec = PreprocessSpec(size=48, width=16)
    image = np.zeros((48, 16), np.float32)
    image[8:40, 4:12] = 0.3
    image[20:24, 4:12] = 0.9  # a dark band with sharp edges
    coarse = Augmenter._coarsen(image, 0.5)
    assert coarse.shape == image.shape
    edge = lambda a: np.abs(np.diff(a[:, 8])).max()  # noqa: E731
    assert edge(coarse) < 0.75 * edge(image)  # the band's edges are softer at half the resolution
    assert abs(coarse.sum() - image.sum()) / image.sum() < 0.05  # same chromosome, not a different one
    assert np.array_equal(Augmenter._coarsen(image, 1.0), image)

    only_gamma = AugmentConfig(rotation_deg=0, scale=0, shift=0, bend=0, contrast=0, brightness=0, blur_probability=0,
                               noise_std=0, hflip=False, resolution_probability=0, gamma=0.5, condensation=0,
                               neighbour_probability=0)
    out = Augmenter(spec, only_gamma, seed=3)(np.stack([image[:, :, None]] * 8))[..., 0]
    assert np.abs(out[:, :4]).max() < 1e-6  # the background stays background
    ratios = out[:, 30, 8] / out[:, 21, 8]  # pale arm over dark band: the band contrast changes
    assert ratios.min() < 0.3 / 0.9 - 0.02 and ratios.max() > 0.3 / 0.9 + 0.02
    assert np.all(out[:, 21, 8] >= out[:, 30, 8])  # ... but a dark band stays darker than the arm


def test_condensation_changes_a_chromosomes_shape_not_how_it_fills_the_box():
    from karyo.export.augment import AugmentConfig, Augmenter

    only_condensation = AugmentConfig(rotation_deg=0, scale=0, shift=0, bend=0, contrast=0, brightness=0,
                                      blur_probability=0, noise_std=0, gamma=0, resolution_probability=0,
                                      hflip=False, condensation=0.3, neighbour_probability=0)
    spec = PreprocessSpec(size=96, width=32)
    long_bar = np.zeros((96, 32), np.float32)
    long_bar[18:78, 11:21] = 0.8  # 60 x 10: its length touches the box first
    short_blob = np.zeros((96, 32), np.float32)
    short_blob[38:58, 6:26] = 0.8  # 20 x 20: its width does

    def extent(image: np.ndarray) -> tuple[int, int]:
        rows, cols = np.flatnonzero((image > 0.4).any(axis=1)), np.flatnonzero((image > 0.4).any(axis=0))
        return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)

    out = Augmenter(spec, only_condensation, seed=5)(np.stack([long_bar[:, :, None]] * 24 + [short_blob[:, :, None]] * 24))[..., 0]
    long_shapes = np.array([extent(image) for image in out[:24]], float)
    short_shapes = np.array([extent(image) for image in out[24:]], float)
    assert np.all(np.abs(long_shapes[:, 0] - 60) <= 1)  # the long side still spans what it spanned
    assert np.all(np.abs(short_shapes[:, 1] - 20) <= 1)
    ratios = np.concatenate([long_shapes[:, 0] / long_shapes[:, 1] / 6.0, short_shapes[:, 0] / short_shapes[:, 1]])
    assert ratios.min() < 0.92 and ratios.max() > 1.08  # more and less condensed shapes both drawn
    assert ratios.min() > 1 / 1.3 - 0.08 and ratios.max() < 1.3 + 0.08  # within the configured factor (pixel rounding)
    assert np.abs(out[:, :3, :3]).max() < 1e-6  # background stays background
    unchanged = Augmenter(spec, AugmentConfig(**{**only_condensation.to_dict(), "condensation": 0.0}), seed=5)
    np.testing.assert_array_equal(unchanged(long_bar[None, :, :, None])[0, :, :, 0], long_bar)


def test_a_neighbours_piece_enters_through_an_edge_and_leaves_the_chromosome_as_it_was():
    from karyo.export.augment import AugmentConfig, Augmenter

    only_neighbour = AugmentConfig(rotation_deg=0, scale=0, shift=0, bend=0, contrast=0, brightness=0,
                                   blur_probability=0, noise_std=0, gamma=0, resolution_probability=0,
                                   hflip=False, condensation=0, neighbour_probability=1.0, neighbour_depth=0.3)
    spec = PreprocessSpec(size=96, width=32)
    chromosome = np.zeros((96, 32), np.float32)
    chromosome[18:78, 6:26] = 0.8  # wide, so a strip 7 px deep or more overlaps it
    neighbour = np.zeros((96, 32), np.float32)
    neighbour[10:86, 8:24] = 0.5  # paler, so its pixels can be told apart
    batch = np.stack([chromosome[:, :, None], neighbour[:, :, None]])  # each the other's only neighbour
    augmenter = Augmenter(spec, only_neighbour, seed=2)
    out = [augmenter(batch)[0, :, :, 0] for _ in range(12)]
    sides = {"left": 0, "right": 0, "top or bottom": 0}
    for image in out:
        np.testing.assert_array_equal(image[chromosome > 0], np.float32(0.8))  # the darker of the two: the chromosome stays
        laid = (image > 0) & (chromosome == 0)
        assert laid.any() and np.all(image[laid] == np.float32(0.5))  # a piece of the other chromosome, nothing else
        rows, cols = np.nonzero(laid)
        if cols.max() - cols.min() + 1 <= round(0.3 * 32):  # a strip along the left or right edge
            assert cols.min() == 0 or cols.max() == 31
            sides["left" if cols.min() == 0 else "right"] += 1
        else:  # one across the top or bottom, at most 0.3 of the height deep
            assert rows.max() - rows.min() + 1 <= round(0.3 * 96) and (rows.min() == 0 or rows.max() == 95)
            sides["top or bottom"] += 1
    assert sides["left"] > 0 and sides["right"] > 0  # both sides drawn
    off = AugmentConfig(**{**only_neighbour.to_dict(), "neighbour_probability": 0.0})
    np.testing.assert_array_equal(Augmenter(spec, off, seed=2)(batch)[0, :, :, 0], chromosome)


# ---------------------------------------------------------------- models


def _dense_params(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def _conv_params(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out + c_out


@pytest.mark.slow
def test_seed_dcnn_matches_the_study_architecture_at_300_px():
    from karyo.export.models import build_model

    model = build_model("seed-dcnn", 24)
    assert model.input_shape == (None, 300, 300, 1) and model.inputs[0].name == "image"
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "InputLayer", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D",
        "Flatten", "Dense", "Dense", "Dense", "Dense", "Activation",
    ]
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [32, 64, 64] and all(c.kernel_size == (3, 3) for c in convs)
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    assert [d.units for d in dense] == [1024, 1024, 512, 24]
    side = 300
    for _ in range(3):  # valid 3x3 conv, then 2x2 pool
        side = (side - 2) // 2
    expected = (
        _conv_params(3, 1, 32) + _conv_params(3, 32, 64) + _conv_params(3, 64, 64)
        + _dense_params(side * side * 64, 1024) + _dense_params(1024, 1024) + _dense_params(1024, 512)
        + _dense_params(512, 24)
    )
    assert model.count_params() == expected
    assert model.output_shape == (None, 24)


@pytest.mark.slow
def test_edge_is_small_and_softmax():
    from karyo.export.models import build_model

    model = build_model("edge", 24, head="pool")
    assert model.input_shape == (None, 96, 32, 1) and model.inputs[0].name == "image"
    # 4 stages of two 3x3 convs (16, 32, 64, 128 channels, BN without conv bias) + dense 128 -> 24
    convs = [(1, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128)]
    expected = sum(9 * cin * cout + 4 * cout for cin, cout in convs) + 128 * 24 + 24
    assert model.count_params() == expected == 297_768
    assert any(type(layer).__name__ == "BatchNormalization" for layer in model.layers)
    assert any(type(layer).__name__ == "GlobalAveragePooling2D" for layer in model.layers)
    probs = model.predict(np.random.default_rng(0).random((3, 96, 32, 1), dtype=np.float32), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet", 24)


@pytest.mark.slow
def test_edge_width_scales_channels_and_only_edge_has_the_knob():
    from karyo.export.models import build_model

    wide = build_model("edge", 24, width=1.25)  # 16/32/64/128 -> 16/40/80/160 (multiples of 8: 20 rounds to 16)
    convs = [(1, 16), (16, 16), (16, 40), (40, 40), (40, 80), (80, 80), (80, 160), (160, 160)]
    head = 12 * 160 * 24 + 24  # the default rows head: 12 places along 96 px, 160 channels each
    assert wide.count_params() == sum(9 * cin * cout + 4 * cout for cin, cout in convs) + head
    with pytest.raises(ValueError, match="only applies to edge"):
        build_model("seed-dcnn", 24, (40, 40), width=1.25)
    with pytest.raises(ValueError, match="channel multiplier"):
        build_model("edge", 24, width=0.1)


@pytest.mark.slow
def test_edge_rows_head_keeps_one_feature_vector_per_place_along_the_chromosome():
    from karyo.export.models import build_model

    model = build_model("edge", 24)  # the default head; 96x32 -> last map 12x4x128, averaged across the width
    convs = [(1, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128)]
    assert model.get_layer("rows").output.shape == (None, 12 * 128)
    assert model.count_params() == sum(9 * cin * cout + 4 * cout for cin, cout in convs) + 12 * 128 * 24 + 24
    # a row's features come from its own place: changing only the bottom eighth of the image leaves
    # the top rows' features exactly as they were (pooled over the whole map, every feature moves)
    features = keras_submodel(model, "rows")
    image = np.random.default_rng(1).random((1, 96, 32, 1), dtype=np.float32)
    changed = image.copy()
    changed[:, 84:] = 0.0
    a, b = features(image).numpy().reshape(12, 128), features(changed).numpy().reshape(12, 128)
    np.testing.assert_array_equal(a[:6], b[:6])
    assert np.abs(a[-1] - b[-1]).max() > 1e-3
    with pytest.raises(ValueError, match="unknown head"):
        build_model("edge", 24, head="attention")
    with pytest.raises(ValueError, match="--head only applies to edge"):
        build_model("seed-dcnn", 24, (40, 40), head="rows")


# ---------------------------------------------------------------- Keras backend


def test_requested_keras_backend_follows_keras_own_order(tmp_path, monkeypatch):
    from karyo.export.models import requested_keras_backend

    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert requested_keras_backend() == "tensorflow"  # no keras.json: Keras' default
    (tmp_path / "keras.json").write_text('{"backend": "jax", "floatx": "float32"}')
    assert requested_keras_backend() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "Torch")  # the variable wins over the file
    assert requested_keras_backend() == "torch"
    monkeypatch.delenv("KERAS_BACKEND")
    (tmp_path / "keras.json").write_text("{not json")
    assert requested_keras_backend() == "tensorflow"


@pytest.mark.export
def test_another_backend_skips_the_tensorflow_set_up(tmp_path):
    """Under KERAS_BACKEND=jax the TensorFlow import and thread caps are skipped (JAX needs neither);
    under the default they happen. Run in fresh processes, since this one has TensorFlow loaded."""
    import subprocess
    import sys

    probe = (
        "import os, sys; from karyo.export.models import configure_backend; "
        "print(configure_backend(1), 'tensorflow' in sys.modules, os.environ.get('XLA_FLAGS'))"
    )
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    env.update(KERAS_HOME=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="jax")
    other = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert other.returncode == 0, other.stderr
    assert other.stdout.split() == ["jax", "False", "--xla_gpu_deterministic_ops=true"]
    env.pop("KERAS_BACKEND")
    default = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert default.returncode == 0, default.stderr
    assert default.stdout.split() == ["tensorflow", "True", "None"]


def test_jax_gets_deterministic_gpu_ops_unless_xla_flags_already_choose(monkeypatch):
    from karyo.export.models import ask_xla_for_deterministic_gpu_ops

    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_autotune_level=0")
    ask_xla_for_deterministic_gpu_ops()
    assert os.environ["XLA_FLAGS"] == "--xla_gpu_autotune_level=0 --xla_gpu_deterministic_ops=true"
    ask_xla_for_deterministic_gpu_ops()  # once is enough
    assert os.environ["XLA_FLAGS"].count("deterministic") == 1
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=false")  # the user's choice stands
    ask_xla_for_deterministic_gpu_ops()
    assert os.environ["XLA_FLAGS"] == "--xla_gpu_deterministic_ops=false"


@pytest.mark.export
@pytest.mark.skipif(platform.machine().lower() not in ONEDNN_MACHINES, reason="oneDNN is only asked for on x86")
def test_tensorflow_trains_on_onednn_kernels_unless_the_user_says_otherwise(tmp_path):
    """TensorFlow picks oneDNN by itself only on CPUs with AVX-512 VNNI; karyo asks for it on every x86 CPU
    (28 to 50% less CPU time per step on an AVX2 EPYC), and TF_ENABLE_ONEDNN_OPTS=0 still keeps Eigen. Fresh
    processes: the choice is read once, when TensorFlow loads."""
    import subprocess
    import sys

    probe = (
        "from karyo.export.models import configure_backend, tensorflow_cpu_kernels; "
        "configure_backend(1); print(tensorflow_cpu_kernels())"
    )
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    env.update(KERAS_HOME=str(tmp_path), KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    default = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert default.returncode == 0, default.stderr
    assert default.stdout.split() == ["onednn"]
    refused = subprocess.run([sys.executable, "-c", probe], env={**env, "TF_ENABLE_ONEDNN_OPTS": "0"},
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 0, refused.stderr
    assert refused.stdout.split() == ["eigen"]


def test_convert_refuses_another_backend_before_reading_the_model(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from karyo.export.cli import app

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "no-model"), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2
    assert "needs Keras' TensorFlow backend, but KERAS_BACKEND selects jax" in result.output
    assert "not a model folder" not in result.output and not (tmp_path / "b").exists()


def keras_submodel(model, layer: str):
    import keras

    return keras.Model(model.inputs, model.get_layer(layer).output)


@pytest.mark.parametrize("option,value", [("--width", "1.25"), ("--head", "rows")])
def test_train_command_rejects_edge_options_for_seed_dcnn_before_reading_data(tmp_path, monkeypatch, option, value):
    from typer.testing import CliRunner

    import karyo.export.train as train
    from karyo.export.cli import app

    def must_not_read(*args, **kwargs):
        raise AssertionError("crops were read before the options were checked")

    monkeypatch.setattr(train, "read_labeled_folders", must_not_read)
    data = make_tiny_dataset(tmp_path / "data", cases=2, per_class=1)
    result = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "m"), "--arch", "seed-dcnn", option, value])
    assert result.exit_code == 2, result.output
    assert f"error: {option} only applies to edge; seed-dcnn is built as published" in result.output
    assert not (tmp_path / "m").exists()


def test_export_commands_without_the_training_extra_say_what_to_install(tmp_path, monkeypatch, capsys):
    """The scanner PC's runtime-only install: `karyo-export train` gives one line and exit 2, not a traceback."""
    import sys

    from karyo.export.cli import main

    data = make_tiny_dataset(tmp_path / "data", cases=2, per_class=1)
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now fails as on a machine without it
    monkeypatch.setattr(sys, "argv", ["karyo-export", "train", str(data), "--out", str(tmp_path / "m")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: karyo-export needs the training extra, and tensorflow is not installed: pip install 'karyo[export]'\n"
    assert not (tmp_path / "m").exists()


def _model_folder(root: Path, **changes) -> Path:
    """A folder as `karyo-export train` writes it (config + model file), for the --init-from checks."""
    from karyo.runtime.labels import scheme

    config = {"arch": "edge", "width": 1.0, "head": "rows", "labels": scheme("normal24").to_dict(),
              "preprocess": {"size": 96, "width": 32}, "data_roots": ["/synthetic"]}
    config.update(changes)
    config = {key: value for key, value in config.items() if value != "(absent)"}
    root.mkdir(parents=True)
    (root / "train_config.json").write_text(json.dumps(config))
    (root / "model.keras").write_bytes(b"weights")
    return root


@pytest.mark.parametrize(
    "changes,message",
    [({"head": "pool"}, "trained with head pool, this run has rows"),
     ({"head": "(absent)"}, "trained with head pool, this run has rows"),  # folders from before --head had pool
     ({"preprocess": {"size": 64, "width": 64}}, "trained with input 64x64, this run has 96x32"),
     ({"arch": "seed-dcnn", "head": None}, "trained with arch seed-dcnn, this run has edge"),
     ({"labels": {"names": ["normal", "abnormal"]}}, "trained with labels 2 labels (normal, abnormal...), this run has 24 labels")],
)
def test_init_from_refuses_other_networks_before_reading_crops(tmp_path, monkeypatch, changes, message):
    from typer.testing import CliRunner

    import karyo.export.train as train
    from karyo.export.cli import app

    def must_not_read(*args, **kwargs):
        raise AssertionError("crops were read before --init-from was checked")

    monkeypatch.setattr(train, "read_labeled_folders", must_not_read)
    start = _model_folder(tmp_path / "pretrained", **changes)
    data = make_tiny_dataset(tmp_path / "data", cases=2, per_class=1)
    result = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "m"), "--init-from", str(start)])
    assert result.exit_code == 2, result.output
    assert f"error: --init-from {start.resolve()}: {message}" in result.output
    (start / "model.keras").unlink()
    result = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "m"), "--init-from", str(start)])
    assert result.exit_code == 2 and "no model.keras (give a folder written by `karyo-export train`)" in result.output
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------- training


@pytest.mark.slow
@pytest.mark.parametrize("arch,size,width", [("edge", (32, 16), 0.5), ("seed-dcnn", (40, 40), 1.0)])
def test_train_writes_a_complete_model_folder(tmp_path, arch, size, width):
    from karyo.export.models import tensorflow_cpu_kernels
    from karyo.export.train import train_model

    data = make_tiny_dataset(tmp_path / "data", cases=5, per_class=3)
    out = train_model([data], tmp_path / "model", arch=arch, epochs=1, input_size=size, batch_size=16, progress=False,
                      width=width)
    for name in ("model.keras", "train_config.json", "report.json", "split.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "train_config.json").read_text())
    assert config["arch"] == arch and (config["preprocess"]["size"], config["preprocess"]["width"]) == size
    assert config["width"] == width
    assert config["preprocess"]["stain_level"] == 0.8  # staining evened out by default
    import tensorflow as tf

    assert config["versions"]["keras_backend"] == "tensorflow" and config["versions"]["tensorflow"] == tf.__version__
    assert config["cpu_kernels"] == tensorflow_cpu_kernels() and config["cpu_kernels"] in ("onednn", "eigen")
    if arch == "edge":  # half width: 8/16/32/64 channels, and that is what was saved
        convs = [(1, 8), (8, 8), (8, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64)]
        expected = sum(9 * cin * cout + 4 * cout for cin, cout in convs)
        assert config["parameters"] == expected + 4 * 64 * 24 + 24  # rows head: 32 px / 8 = 4 places x 64 channels
        assert config["head"] == "rows"
    assert config["labels"]["names"][:3] == ["1", "2", "3"]
    assert config["cell_size"] is None  # folder-per-class crops without cell ids: no cell to be relative to
    split = json.loads((out / "split.json").read_text())
    test_cases = set(split["test_cases"])
    assert test_cases and test_cases.isdisjoint(split["train_cases"]) and test_cases.isdisjoint(split["val_cases"])
    assert {d["case"] for d in split["test"]} == test_cases
    report = json.loads((out / "report.json").read_text())
    assert report["test"]["n"] == len(split["test"])
    assert len(report["history"]["loss"]) == 1
    assert not list(tmp_path.glob(".model.staging*"))  # staging folder renamed away


def _train_tiny(data: Path, out: Path, *options: str):
    """`karyo-export train` through its CLI on a tiny set: one epoch at 32x16, batches of 16."""
    from typer.testing import CliRunner

    from karyo.export.cli import app

    tiny = ["--epochs", "1", "--input-size", "32x16", "--batch-size", "16"]
    return CliRunner().invoke(app, ["train", str(data), "--out", str(out), *options, *tiny])


@pytest.mark.slow
def test_val_fraction_zero_trains_on_every_case_but_the_test_ones(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", cases=6, per_class=2)
    result = _train_tiny(data, tmp_path / "m", "--val-fraction", "0")
    assert result.exit_code == 0, result.output
    split = json.loads((tmp_path / "m" / "split.json").read_text())
    config = json.loads((tmp_path / "m" / "train_config.json").read_text())
    everyone = {s.case for s in read_labeled_folders([data])}
    assert split["val_cases"] == [] and config["counts"]["val"] == 0
    assert split["test_cases"] and set(split["train_cases"]) == everyone - set(split["test_cases"])
    history = json.loads((tmp_path / "m" / "report.json").read_text())["history"]
    assert "val_loss" not in history and len(history["loss"]) == 1  # no early stopping without a hold-out
    refused = _train_tiny(data, tmp_path / "n", "--val-fraction", "0.6")
    assert refused.exit_code == 2 and not (tmp_path / "n").exists()


@pytest.mark.slow
def test_exclude_leaves_listed_crops_out_of_training_but_not_out_of_the_held_out_test(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", cases=6, per_class=2)
    plain = _train_tiny(data, tmp_path / "plain")
    assert plain.exit_code == 0, plain.output
    split = json.loads((tmp_path / "plain" / "split.json").read_text())
    trained = [Path(s["path"]) for s in split["train"]]
    held_out = Path(split["test"][0]["path"])
    listed = trained[:3] + [held_out, tmp_path / "not-a-crop.png"]
    # the audit's CSV (a path column among others), paths written relative to where it ran
    rows = ["finding,kind,path,label"] + [f"1,single,{os.path.relpath(p)},7" for p in listed]
    (tmp_path / "audit.csv").write_text("\n".join(rows) + "\n")
    result = _train_tiny(data, tmp_path / "m", "--exclude", str(tmp_path / "audit.csv"))
    assert result.exit_code == 0, result.output
    assert "warning: 1 of the 5 crops listed" in result.output
    again = json.loads((tmp_path / "m" / "split.json").read_text())
    assert again["test"] == split["test"]  # the same folds, the held-out crops as labelled
    assert again["train_cases"] == split["train_cases"]
    assert [s["path"] for s in again["train"]] == [str(p) for p in trained[3:]]
    config = json.loads((tmp_path / "m" / "train_config.json").read_text())
    assert config["excluded"]["listed"] == 5 and config["excluded"]["left_out"] == 3
    assert config["counts"]["train"] == len(trained) - 3
    assert json.loads((tmp_path / "plain" / "train_config.json").read_text())["excluded"] is None
    missing = _train_tiny(data, tmp_path / "n", "--exclude", str(tmp_path / "none.csv"))
    assert missing.exit_code == 2 and "cannot read the exclusion list" in missing.output


@pytest.mark.slow
def test_stain_level_option_reaches_the_model_folder_and_zero_turns_it_off(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", cases=4, per_class=2)
    for level, expected in (("0.6", 0.6), ("0", None)):
        out = tmp_path / f"m{level}"
        result = _train_tiny(data, out, "--stain-level", level)
        assert result.exit_code == 0, result.output
        preprocess = json.loads((out / "train_config.json").read_text())["preprocess"]
        assert preprocess["stain_level"] == expected and preprocess["centred_crop"] is True
    refused = _train_tiny(data, tmp_path / "n", "--stain-level", "0.01")
    assert refused.exit_code == 2 and "stain_level" in refused.output and not (tmp_path / "n").exists()


@pytest.mark.slow
def test_patience_condensation_centring_and_neighbour_options_reach_the_model_folder(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", cases=5, per_class=2)
    result = _train_tiny(data, tmp_path / "m", "--patience", "20", "--condensation", "0.2", "--no-centred-crop", "--neighbours", "0.4")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "m" / "train_config.json").read_text())
    assert config["patience"] == 20 and config["augment"]["condensation"] == 0.2
    assert config["augment"]["neighbour_probability"] == 0.4
    assert config["preprocess"]["centred_crop"] is False
    refused = _train_tiny(data, tmp_path / "n", "--patience", "0")
    assert refused.exit_code == 2 and not (tmp_path / "n").exists()


@pytest.mark.slow
def test_kfold_reports_mean_and_spread(tmp_path):
    from karyo.export.train import train_model

    data = make_tiny_dataset(tmp_path / "data", cases=6, per_class=2)
    out = train_model([data], tmp_path / "model", epochs=1, input_size=(32, 16), folds=3, batch_size=16, progress=False)
    report = json.loads((out / "report.json").read_text())
    cv = report["cross_validation"]
    assert cv["k"] == 3 and len(cv["accuracies"]) == 3
    assert cv["accuracy_mean"] == pytest.approx(np.mean(cv["accuracies"]))
    tested = [c for fold in report["folds"] for c in fold["test_cases"]]
    assert sorted(tested) == sorted({s.case for s in read_labeled_folders([data])})


@pytest.mark.slow
def test_one_fold_alone_holds_out_the_same_cases_as_in_the_full_kfold(tmp_path):
    """`--fold n` exists so each fold can go through convert and evaluate: its held-out cases must
    be fold n's of the full k-fold run, and its report must not pretend to be a k-fold mean."""
    from karyo.export.data import case_folds
    from karyo.export.train import train_model

    data = make_tiny_dataset(tmp_path / "data", cases=6, per_class=2)
    out = train_model([data], tmp_path / "model", epochs=1, input_size=(32, 16), folds=3, only_fold=2, batch_size=16, progress=False)
    report = json.loads((out / "report.json").read_text())
    assert report["fold"] == {"number": 2, "of": 3} and "cross_validation" not in report
    expected = sorted({s.case for s in case_folds(read_labeled_folders([data]), 3, 0)[1][1]})
    assert json.loads((out / "split.json").read_text())["test_cases"] == expected
    with pytest.raises(ValueError, match="--fold 4 needs --folds K"):
        train_model([data], tmp_path / "bad", epochs=1, folds=3, only_fold=4, progress=False)


@pytest.mark.slow
def test_init_from_continues_from_the_earlier_weights(tmp_path):
    """Fine-tuning starts where the first run ended: its first epoch's loss is below the first run's,
    and the new folder records which weights it started from."""
    from karyo.runtime.bundle import sha256_file
    from karyo.export.train import train_model

    data = make_tiny_dataset(tmp_path / "data", cases=5, per_class=3)
    common = dict(input_size=(32, 16), batch_size=16, progress=False, width=0.5)
    first = train_model([data], tmp_path / "first", epochs=4, **common)
    second = train_model([data], tmp_path / "second", epochs=1, init_from=first, **common)
    first_loss = json.loads((first / "report.json").read_text())["history"]["loss"]
    second_loss = json.loads((second / "report.json").read_text())["history"]["loss"]
    assert second_loss[0] < first_loss[0] - 0.3, (first_loss, second_loss)
    config = json.loads((second / "train_config.json").read_text())
    assert config["init_from"] == {"folder": str(first.resolve()), "model_sha256": sha256_file(first / "model.keras"),
                                   "trained_on": [str(data.resolve())]}
    assert json.loads((first / "train_config.json").read_text())["init_from"] is None
