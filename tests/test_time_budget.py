"""The training time budget: how many epochs fit, the re-planned cosine, and a fit that keeps to it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from karyo.export.time_budget import (  # noqa: E402
    AFTER_FIT_RESERVE_S, DEFAULT_TIME_BUDGET_MIN, BudgetCut, BudgetRecord, affordable_epochs, budget_message,
    epoch_floor, fit_deadline, resolve_budget,
)

from test_models_train import make_tiny_dataset  # noqa: E402


def test_nothing_is_decided_before_a_second_epoch_is_timed():
    # the first epoch holds the graph tracing: 500 s of it must not cut a 24-epoch plan on its own
    assert affordable_epochs([], 10.0, planned=24, floor=6) == 24
    assert affordable_epochs([500.0], 10.0, planned=24, floor=6) == 24


def test_affordable_epochs_leaves_out_the_first_epoch_and_counts_what_is_left():
    # epochs 2 and 3 took 60 s each: 600 s left is 10 more epochs, 13 in all
    assert affordable_epochs([100.0, 60.0, 60.0], 600.0, planned=24, floor=6) == 13
    # the mean, not the median: one slow epoch of a shared machine counts (100 s per epoch: 3 more)
    assert affordable_epochs([10.0, 50.0, 50.0, 200.0], 300.0, planned=24, floor=6) == 7
    # enough time: the plan stands, never more than it
    assert affordable_epochs([100.0, 60.0, 60.0], 1e6, planned=24, floor=6) == 24


def test_affordable_epochs_never_goes_below_the_floor_or_the_epochs_done():
    assert affordable_epochs([100.0, 60.0, 60.0], -50.0, planned=24, floor=6) == 6
    assert affordable_epochs([60.0] * 8, 0.0, planned=24, floor=6) == 8


def test_epoch_floor_is_a_quarter_of_the_asked_epochs_and_at_least_one():
    assert [epoch_floor(n) for n in (1, 3, 5, 24, 48)] == [1, 1, 2, 6, 12]


def test_fit_deadline_shares_the_time_left_among_the_trainings_still_to_run():
    assert fit_deadline(3600.0, 1, now=0.0) == 3600.0 - AFTER_FIT_RESERVE_S
    assert fit_deadline(3600.0, 2, now=0.0) == 1800.0 - AFTER_FIT_RESERVE_S
    assert fit_deadline(3600.0, 2, now=1800.0) == 2700.0 - AFTER_FIT_RESERVE_S


def test_the_default_budget_guards_the_default_recipe_and_an_explicit_one_always_holds():
    assert resolve_budget(None, []) == (DEFAULT_TIME_BUDGET_MIN, None)
    minutes, why = resolve_budget(None, ["--epochs 48", "--width 2"])
    assert minutes is None and "(--epochs 48, --width 2)" in why and "--time-budget MIN" in why
    assert resolve_budget(10.0, ["--width 2"]) == (10.0, None)
    assert resolve_budget(0.0, []) == (None, "switched off (--time-budget 0)")


def test_recipe_choices_name_what_differs_from_the_default_recipe():
    from karyo.export.train import recipe_choices

    assert recipe_choices("edge", 1.0, 24, (96, 32)) == []
    assert recipe_choices("edge", 2.0, 48, (128, 48)) == ["--width 2", "--epochs 48", "--input-size 128x48"]
    assert recipe_choices("seed-dcnn", 1.0, 24, (300, 300)) == ["--arch seed-dcnn"]


def test_budget_message_names_the_cut_and_how_to_train_every_epoch():
    record = BudgetRecord(minutes=30.0, asked_epochs=24, planned_epochs=14, cuts=[BudgetCut(2, 14, 115.0)])
    line = budget_message(record, 115.0)
    assert "115 s" in line and "14 of the 24 epochs fit in 30 minutes" in line
    assert "--time-budget 0 trains all 24, about 46.0 min" in line
    record.cuts.append(BudgetCut(5, 13, 121.0))
    record.planned_epochs = 13
    assert budget_message(record, 121.0) == "time budget: now 13 of the 24 epochs fit (an epoch takes 121 s here)"
    record.planned_epochs = 6
    assert budget_message(record, 400.0, late=True).endswith(
        "; fewer fit, but 6 is the least this trains, so it will end after its 30 minutes")
    record.minutes = 1.0
    assert budget_message(record, 400.0, late=True).endswith("so it will end after its 1 minute")


@pytest.mark.export
def test_the_paced_cosine_is_keras_cosine_until_paced_then_covers_it_sooner():
    import keras

    from karyo.export.time_budget import replannable_cosine

    steps_per_epoch, epochs, lr, alpha = 10, 24, 2e-3, 0.02
    schedule, pace = replannable_cosine(lr, steps_per_epoch, epochs, alpha)
    plain = keras.optimizers.schedules.CosineDecay(lr, decay_steps=epochs * steps_per_epoch, alpha=alpha)
    steps = [0, 1, 37, 120, 239, 240, 400]
    assert [float(schedule(s)) for s in steps] == [float(plain(s)) for s in steps]
    pace.assign(24 / 12)  # 12 epochs now fit
    shorter = keras.optimizers.schedules.CosineDecay(lr, decay_steps=12 * steps_per_epoch, alpha=alpha)
    np.testing.assert_allclose([float(schedule(s)) for s in steps], [float(shorter(s)) for s in steps], rtol=1e-6)
    assert float(schedule(120)) == pytest.approx(lr * alpha) and float(schedule(400)) == pytest.approx(lr * alpha)


def _fit(deadline: float | None, epochs: int, crops: int = 64):
    from karyo.export.train import fit_model
    from karyo.runtime.labels import scheme
    from karyo.runtime.preprocess import PreprocessSpec
    from karyo.runtime.tensors import LabeledTensors

    rng = np.random.default_rng(0)
    data = LabeledTensors(x=rng.integers(0, 255, (crops, 32, 16, 1), dtype=np.uint8), y=np.arange(crops) % 24,
                          samples=[], skipped=[])
    model, history = fit_model(data, None, "edge", scheme("normal24"), PreprocessSpec(size=32, width=16),
                               epochs=epochs, batch_size=32, verbose=0, width=0.5, deadline=deadline, budget_minutes=30)
    return model, history


@pytest.mark.slow
def test_a_run_the_budget_does_not_cut_trains_the_weights_keras_cosine_schedule_trains(monkeypatch):
    """Uncut, the paced schedule is Keras' CosineDecay to the last bit: the run equals one trained,
    without a budget, on the plain CosineDecay the training used before the budget existed."""
    import keras

    # 8 steps an epoch: enough for a schedule that merely reads its length from a variable to differ
    # in the last bits (measured), which 2 steps an epoch are not
    with_budget, history = _fit(time.perf_counter() + 3600, epochs=3, crops=256)
    assert history["time_budget"]["cuts"] == [] and history["time_budget"]["applied"] and len(history["loss"]) == 3

    def plain_cosine(learning_rate, steps_per_epoch, epochs, alpha):
        cosine = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=epochs * steps_per_epoch, alpha=alpha)
        return cosine, keras.Variable(1.0)

    monkeypatch.setattr("karyo.export.train.replannable_cosine", plain_cosine)
    without, plain_history = _fit(None, epochs=3, crops=256)
    assert not plain_history["time_budget"]["applied"]
    for a, b in zip(with_budget.get_weights(), without.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_late_run_is_cut_to_the_floor_and_its_learning_rate_decays_there(monkeypatch):
    """12 epochs asked, the deadline already passed: after epoch 2, 3 in all (the floor), the third
    trained on the shortened cosine, ending at its floor; the same run with the cut only stopping
    the fit (schedule left as planned) trains other weights, so the compiled step read the cut."""
    model, history = _fit(time.perf_counter() - 1.0, epochs=12)
    budget = history["time_budget"]
    assert len(history["loss"]) == 3 and budget["planned_epochs"] == 3 and budget["asked_epochs"] == 12
    assert [(c["after_epoch"], c["epochs"]) for c in budget["cuts"]] == [(2, 3)]
    assert float(model.optimizer.learning_rate) == pytest.approx(2e-3 * 0.02)

    from karyo.export.time_budget import epoch_clock

    shortened: list[int] = []

    def clock_without_cut(*args, **kwargs):
        clock = epoch_clock(*args, **kwargs)
        clock.shorten_schedule = shortened.append  # stop where the cut says, the schedule left as planned
        return clock

    monkeypatch.setattr("karyo.export.train.epoch_clock", clock_without_cut)
    stopped, stopped_history = _fit(time.perf_counter() - 1.0, epochs=12)
    assert shortened == [3] and len(stopped_history["loss"]) == 3
    assert float(stopped.optimizer.learning_rate) > 10 * 2e-3 * 0.02  # still high: 3 of 12 epochs into the cosine
    assert any(not np.array_equal(a, b) for a, b in zip(model.get_weights(), stopped.get_weights()))


@pytest.mark.slow
def test_train_cli_reports_a_cut_and_records_it(tmp_path: Path):
    from typer.testing import CliRunner

    from karyo.export.cli import app

    data = make_tiny_dataset(tmp_path / "data", cases=4, per_class=2)
    tiny = ["--input-size", "32x16", "--batch-size", "16", "--width", "0.5"]
    result = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "m"), "--epochs", "8",
                                      "--time-budget", "0.001", *tiny])
    assert result.exit_code == 0, result.output
    assert "trained 2 of 8 epochs to stay within 0.001 minutes (--time-budget 0 for all)" in result.output
    config = json.loads((tmp_path / "m" / "train_config.json").read_text())
    assert config["epochs"] == 8 and config["epochs_run"] == 2
    assert config["time_budget"]["minutes"] == 0.001 and config["time_budget"]["planned_epochs"] == 2

    chosen = CliRunner().invoke(app, ["train", str(data), "--out", str(tmp_path / "n"), "--epochs", "3", *tiny])
    assert chosen.exit_code == 0, chosen.output
    config = json.loads((tmp_path / "n" / "train_config.json").read_text())
    assert config["epochs_run"] == 3 and config["time_budget"]["applied"] is False
    assert "(--width 0.5, --epochs 3, --input-size 32x16)" in config["time_budget"]["note"]
    assert "to stay within" not in chosen.output


@pytest.mark.slow
def test_a_cut_reaches_the_compiled_step_under_jax_too():
    """Keras' JAX backend (for a GPU without a TensorFlow build, README) takes the pace into its
    compiled step as a constant when it traces it; without tracing again after a cut, the late run
    above trained under JAX the same weights as a stop alone (measured). The same test, run again
    under JAX in a fresh process (Keras picks its backend once per process), must pass there too."""
    import importlib.util
    import subprocess
    import sys

    if os.environ.get("KERAS_BACKEND") == "jax":
        pytest.skip("this run is already under JAX: the late-run test above is the JAX check")
    if importlib.util.find_spec("jax") is None:
        pytest.skip("JAX is not installed here (no karyo dependency needs it): the TensorFlow run above checks the cut")
    test = f"{Path(__file__)}::test_a_late_run_is_cut_to_the_floor_and_its_learning_rate_decays_there"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                          env=os.environ | {"KERAS_BACKEND": "jax"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-3000:]
