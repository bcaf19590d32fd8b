"""Train a chromosome classifier on labeled crop folders, split by case, and write a model folder.

The model folder holds everything `convert` needs and nothing it has to guess: `model.keras`,
`train_config.json` (architecture, label order, preprocessing spec), `report.json` (held-out
metrics), `confusion.png`, and `split.json` (which cases and crops were held out, so export and
calibration evaluate on data the model never saw).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from karyo.runtime.bundle import atomic_write_text, staged_folder, utc_now
from karyo.runtime.cell_size import SizePrior, relative_sizes
from karyo.runtime.dataset import Sample, read_labeled_folders
from karyo.runtime.labels import LabelScheme, scheme as make_scheme
from karyo.runtime.metrics import classification_report
from karyo.runtime.preprocess import DEFAULT_STAIN_LEVEL, PreprocessSpec

from .allocator import malloc_thresholds_callback
from .augment import AugmentConfig, Augmenter
from karyo.runtime.tensors import LabeledTensors, load_labeled_tensors

from .data import ExclusionList, case_folds, case_split, sample_to_dict, select_scheme_samples, storage_dtype
from .models import (
    DEFAULT_ARCH, backend_version, build_model, check_edge_options, configure_backend, default_input_size, edge_head,
    tensorflow_cpu_kernels,
)
from .time_budget import BudgetRecord, epoch_clock, fit_deadline, replannable_cosine, resolve_budget
from .warm_start import WarmStart, check_warm_start, load_warm_start

# The default recipe's length: 24 epochs of the cosine schedule (benchmarks/ACCURACY.md, Training options).
DEFAULT_EPOCHS = 24


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """n / (k * count) per class, so each class carries the same total weight; absent classes get 0."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes, dtype=np.float32)
    weights[present] = len(y) / (present.sum() * counts[present])
    return weights


def _batches_class():
    """Defined lazily so importing this module does not import Keras."""
    import keras

    class AugmentedBatches(keras.utils.PyDataset):
        """Shuffled, augmented, class-weighted batches; a new order every epoch."""

        def __init__(self, data: LabeledTensors, n_classes: int, batch_size: int, augmenter: Augmenter | None, seed: int):
            super().__init__(workers=1, use_multiprocessing=False)
            self.data, self.n_classes, self.batch_size, self.augmenter = data, n_classes, batch_size, augmenter
            self.weights = class_weights(data.y, n_classes)
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(data.y))

        def __len__(self) -> int:
            return math.ceil(len(self.order) / self.batch_size)

        def __getitem__(self, index: int):
            pick = np.sort(self.order[index * self.batch_size : (index + 1) * self.batch_size])
            x = self.data.x[pick]
            x = self.augmenter(x) if self.augmenter is not None else x.astype(np.float32)
            y = self.data.y[pick]
            return x, one_hot(y, self.n_classes), self.weights[y]

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(self.data.y))

    return AugmentedBatches


def one_hot(y: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[y]


def recipe_choices(arch: str, width: float, epochs: int, box: tuple[int, int]) -> list[str]:
    """The options that set what a training costs, as the user wrote them, where they differ from the
    default recipe: the default time budget guards that recipe alone (`resolve_budget`)."""
    default_box = default_input_size(arch)
    return [f"{flag} {value}" for flag, value, default in (
        ("--arch", arch, DEFAULT_ARCH), ("--width", f"{width:g}", "1"), ("--epochs", str(epochs), str(DEFAULT_EPOCHS)),
        ("--input-size", f"{box[0]}x{box[1]}", f"{default_box[0]}x{default_box[1]}")) if value != default]


def fit_model(
    train: LabeledTensors,
    val: LabeledTensors | None,
    arch: str,
    labels: LabelScheme,
    spec: PreprocessSpec,
    epochs: int,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    label_smoothing: float = 0.05,
    patience: int = 8,
    augment: AugmentConfig | None = AugmentConfig(),
    seed: int = 0,
    verbose: int = 2,
    width: float = 1.0,
    head: str | None = None,
    warm_start: WarmStart | None = None,
    deadline: float | None = None,
    budget_minutes: float | None = None,
    budget_note: str | None = None,
):
    """Build and train one model; returns (model, history dict). With a validation split, its best epoch is restored.

    `deadline` (a `time.perf_counter()` time): the epochs must end by then, the schedule shortened
    to fit if this machine is too slow for all of them (`time_budget.py`); the history's
    "time_budget" says what it did.
    """
    import keras

    keras.utils.set_random_seed(seed)
    n_classes = len(labels)
    model = build_model(arch, n_classes, (spec.size, spec.width), width=width, head=head)
    if warm_start is not None:
        load_warm_start(model, warm_start)
    augmenter = Augmenter(spec, augment, seed) if augment is not None else None
    batches = _batches_class()(train, n_classes, batch_size, augmenter, seed)
    schedule, pace = replannable_cosine(learning_rate, len(batches), epochs, alpha=0.02)
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=1e-4),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    budget = BudgetRecord(minutes=budget_minutes, asked_epochs=epochs, planned_epochs=epochs,
                          applied=deadline is not None, note=budget_note)
    if deadline is not None and keras.config.backend() not in ("tensorflow", "jax"):
        # a cut re-plans the schedule through a variable the compiled step must see: checked under
        # TensorFlow and JAX (tests/test_time_budget.py), so elsewhere the budget stays off
        budget.applied, budget.note = False, f"not applied under Keras' {keras.config.backend()} backend"
        print(f"time budget: {budget.note}; training all {epochs} epochs", file=sys.stderr)
        deadline = None
    clock = epoch_clock(budget, deadline, pace, progress=verbose > 0)
    callbacks: list[Any] = [clock]
    if keras.config.backend() == "tensorflow":
        # the batches reach TensorFlow through from_generator, which pins glibc's mmap threshold (allocator.py)
        callbacks.append(malloc_thresholds_callback())
    validation = None
    if val is not None and len(val.y):
        validation = (val.x.astype(np.float32), one_hot(val.y, n_classes))
        # The first epochs do not count: batch-norm statistics still lag the weights there, so an
        # early val_loss dip would stop a short run and restore an unsettled model.
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=patience, restore_best_weights=True, start_from_epoch=min(3, epochs // 4),
                verbose=0,
            )
        )
    fitted = model.fit(batches, validation_data=validation, epochs=epochs, callbacks=callbacks, verbose=verbose)
    history = {k: [float(v) for v in values] for k, values in fitted.history.items()}
    history["epoch_seconds"] = [round(s, 3) for s in clock.seconds]
    return model, history | {"time_budget": budget.to_dict()}


def predict(model, data: LabeledTensors, batch_size: int = 128) -> np.ndarray:
    if not len(data.y):
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    return np.asarray(model.predict(data.x.astype(np.float32), batch_size=batch_size, verbose=0), dtype=np.float32)


def _cases(samples: Sequence[Sample]) -> list[str]:
    return sorted({s.case for s in samples})


def _verbosity(progress: bool) -> int:
    if not progress:
        return 0
    return 1 if sys.stdout.isatty() else 2


def train_model(
    data_roots: Sequence[str | Path],
    out_dir: str | Path,
    arch: str = "edge",
    scheme: str = "normal24",
    epochs: int = DEFAULT_EPOCHS,
    input_size: tuple[int, int] | None = None,
    folds: int = 0,
    only_fold: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    label_smoothing: float = 0.05,
    patience: int = 8,
    test_fraction: float = 0.15,
    val_fraction: float = 0.12,
    augment: AugmentConfig | None = AugmentConfig(),
    progress: bool = True,
    threads: int | None = None,
    width: float = 1.0,
    head: str | None = None,
    init_from: str | Path | None = None,
    stain_level: float | None = DEFAULT_STAIN_LEVEL,
    centred_crop: bool = True,
    exclude: str | Path | None = None,
    time_budget: float | None = None,
) -> Path:
    """Train `arch` on the crops under `data_roots` and write the model folder `out_dir` (atomically).

    Without folds: one split by case into train / validation (early stopping) / test (held out,
    reported). With `folds=k`: case-wise k-fold, mean and spread of the test accuracy reported;
    the folder keeps fold 1's model and its held-out cases, so export evaluates on unseen data.
    `only_fold=n` trains fold n of k alone (the folds are fixed by the seed), so a k-fold study can
    run one fold per process and take every fold through convert and evaluate like a real model.
    `exclude`: a list of crops not to train on (``ExclusionList``); held-out crops are never left out.
    `time_budget`: minutes per model trained, reading the crops included; a machine too slow for
    all `epochs` gets a shortened schedule (`time_budget.py`). 0: train every epoch; None: the
    default budget for the default recipe, none for a network or length chosen by hand.
    """
    if only_fold is not None and not 1 <= only_fold <= max(folds, 0):
        raise ValueError(f"--fold {only_fold} needs --folds K with 1 <= {only_fold} <= K")
    started = time.perf_counter()
    # Options first: a wrong one must be refused before TensorFlow loads and before minutes of preprocessing.
    labels = make_scheme(scheme)
    box_height, box_width = input_size or default_input_size(arch)
    check_edge_options(arch, width, head)
    resolved_head = edge_head(arch, head)
    warm_start = None
    if init_from is not None:
        warm_start = check_warm_start(init_from, arch, width, resolved_head, labels, (box_height, box_width))
    exclusions = ExclusionList.read(exclude) if exclude is not None else None
    minutes, no_budget = resolve_budget(time_budget, recipe_choices(arch, width, epochs, (box_height, box_width)))
    spec = PreprocessSpec(size=box_height, width=box_width, stain_level=stain_level or None, centred_crop=centred_crop)
    configure_backend(threads)
    import keras

    backend = keras.config.backend()  # what Keras really loaded, for the provenance
    backend_release = backend_version(backend)  # imports TensorFlow under its backend: a missing one fails here, early

    roots = [Path(r).resolve() for r in data_roots]
    samples, dropped = select_scheme_samples(read_labeled_folders(roots), labels)
    if dropped:
        print(f"left out {sum(dropped.values())} crops whose label is not in {scheme}: {dropped}", file=sys.stderr)
    if len({s.label for s in samples}) < 2:
        raise ValueError(f"{', '.join(map(str, roots))}: need crops of at least 2 classes of {scheme}")
    if exclusions is not None and (unmatched := exclusions.unmatched(samples)):
        print(f"warning: {unmatched} of the {len(exclusions.paths)} crops listed in {exclusions.source} are not in "
              f"the data (paths are read relative to the current folder)", file=sys.stderr)
    data = load_labeled_tensors(samples, spec, labels, progress=progress, dtype=storage_dtype(spec))
    verbose = _verbosity(progress)
    common = dict(
        arch=arch, labels=labels, spec=spec, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        label_smoothing=label_smoothing, patience=patience, augment=augment, verbose=verbose, width=width,
        head=head, warm_start=warm_start,
    )

    fold_reports: list[dict[str, Any]] = []
    if folds:
        splits = case_folds(data.samples, folds, seed)
    else:
        splits = [case_split(data.samples, test_fraction, seed)]
    kept_model = kept_split = kept_history = kept_report = None
    fits_left = 1 if only_fold is not None else len(splits)
    command_deadline = started + 60.0 * minutes * fits_left if minutes else None
    for number, (trainval, test) in enumerate(splits, start=1):
        if only_fold is not None and number != only_fold:
            continue
        deadline = fit_deadline(command_deadline, fits_left) if command_deadline is not None else None
        fits_left -= 1
        train, val = case_split(trainval, val_fraction, seed + number)
        if exclusions is not None:  # after the split: the folds stay those made without the list
            train, val = exclusions.keep(train), exclusions.keep(val)
        if progress:
            print(
                f"{'fold %d/%d: ' % (number, len(splits)) if folds else ''}train {len(train)} crops "
                f"({len(_cases(train))} cases), val {len(val)} ({len(_cases(val))}), test {len(test)} ({len(_cases(test))})",
                file=sys.stderr,
            )
        model, history = fit_model(data.subset(train), data.subset(val) if val else None, seed=seed + number,
                                   deadline=deadline, budget_minutes=minutes, budget_note=no_budget, **common)
        test_set = data.subset(test)
        report = classification_report(test_set.y, predict(model, test_set), labels.labels) if test else None
        fold_reports.append({"fold": number, "test_cases": _cases(test), "test": report, "epochs_run": len(history["loss"])})
        if progress and report:
            print(f"test accuracy {report['accuracy']:.4f} on {report['n']} held-out crops", file=sys.stderr)
        if kept_model is None:
            kept_model, kept_split, kept_history, kept_report = model, (train, val, test), history, report

    train, val, test = kept_split
    left_out = len(data.samples) - len(train) - len(val) - len(test)  # every crop is in one part but the excluded
    size_prior = fit_size_prior(data.subset(train), labels)
    summary: dict[str, Any] = {"test": kept_report, "history": kept_history}
    accuracies = [f["test"]["accuracy"] for f in fold_reports if f["test"]]
    if only_fold is not None:
        summary["fold"] = {"number": only_fold, "of": folds}  # one fold: its mean is the other folds' job
    elif folds:
        summary["folds"] = fold_reports
        summary["cross_validation"] = {
            "k": folds,
            "accuracy_mean": float(np.mean(accuracies)) if accuracies else None,
            "accuracy_std": float(np.std(accuracies)) if accuracies else None,
            "accuracies": accuracies,
        }
    summary["seconds"] = round(time.perf_counter() - started, 1)
    config = {
        "arch": arch,
        "width": width,
        "head": resolved_head,
        "scheme": labels.name,
        "init_from": warm_start.to_dict() if warm_start is not None else None,
        "labels": labels.to_dict(),
        "preprocess": spec.to_dict(),
        "seed": seed,
        "epochs": epochs,
        "epochs_run": len(kept_history["loss"]),
        "time_budget": kept_history["time_budget"],
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "label_smoothing": label_smoothing,
        "patience": patience,
        "folds": folds,
        "fold": only_fold,
        "augment": augment.to_dict() if augment is not None else None,
        "cell_size": size_prior.to_dict() if size_prior is not None else None,
        "data_roots": [str(r) for r in roots],
        "counts": {"train": len(train), "val": len(val), "test": len(test), "skipped": len(data.skipped)},
        "excluded": exclusions.to_dict(left_out) if exclusions is not None else None,
        "class_counts": {label: int(c) for label, c in zip(labels.labels, np.bincount(data.y, minlength=len(labels)))},
        "parameters": int(kept_model.count_params()),
        "versions": {"keras_backend": backend, backend: backend_release, "keras": keras.__version__,
                     "python": platform.python_version()},
        "cpu_kernels": tensorflow_cpu_kernels() if backend == "tensorflow" else None,
        "xla_flags": os.environ.get("XLA_FLAGS") if backend == "jax" else None,
        "created": utc_now(),
    }
    split = {
        "strategy": "case",
        "seed": seed,
        "fold": (only_fold or 1) if folds else None,
        "train_cases": _cases(train),
        "val_cases": _cases(val),
        "test_cases": _cases(test),
        "test": [sample_to_dict(s) for s in test],
        "train": [sample_to_dict(s) for s in train],
    }
    out = Path(out_dir)
    with staged_folder(out) as stage:
        inference_copy(kept_model).save(stage / "model.keras")
        atomic_write_text(stage / "train_config.json", json.dumps(config, indent=2) + "\n")
        atomic_write_text(stage / "report.json", json.dumps(summary, indent=2) + "\n")
        atomic_write_text(stage / "split.json", json.dumps(split) + "\n")
        if test:
            write_heldout_manifest(test, stage / "heldout")
        if kept_report:
            _write_confusion_png(kept_report, stage / "confusion.png", f"{arch} {labels.name}: held-out test")
    if progress:
        print(f"wrote {out} in {summary['seconds']:.0f} s", file=sys.stderr)
    return out


def fit_size_prior(train: LabeledTensors, labels: LabelScheme) -> SizePrior | None:
    """Per-class chromosome size relative to its cell, from the training crops of cells with a known id.

    Crops without a cell id (a folder tree with no manifest) are left out: their "cell" would be a
    whole case, whose median mixes metaphases of different condensation.
    """
    if train.sizes is None or not len(train):
        return None
    cells = [s.cell_key if s.has_cell else f"no-cell-{i}" for i, s in enumerate(train.samples)]
    relative = relative_sizes(train.sizes, cells)
    return SizePrior.fit([s.label for s in train.samples], relative, labels)


def write_heldout_manifest(samples: Sequence[Sample], folder: Path) -> None:
    """The held-out cases as a labeled folder (`manifest.csv` with absolute paths), so that
    `karyo evaluate BUNDLE MODEL/heldout` measures the bundle on exactly the patients training never saw."""
    import csv
    import io

    folder.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "label", "case", "cell"])
    for s in samples:
        writer.writerow([str(Path(s.path).resolve()), s.label, s.case, s.cell])
    atomic_write_text(folder / "manifest.csv", text.getvalue())


def inference_copy(model):
    """The trained model without optimizer state: AdamW's two slots per weight would triple the
    file (about 1 GB for seed-dcnn at 300 px) and nothing downstream resumes training. Rebuilt from
    its config, not cloned: a clone is compiled again from the training's compile config, whose
    learning-rate schedule (`replannable_cosine`) lives only inside the training run."""
    clean = model.__class__.from_config(model.get_config())
    clean.set_weights(model.get_weights())
    return clean


def _write_confusion_png(report: dict[str, Any], path: Path, title: str) -> None:
    from karyo.runtime.plots import confusion_matrix_png

    confusion_matrix_png(np.asarray(report["confusion_matrix"]), report["labels"], path, title=title)
