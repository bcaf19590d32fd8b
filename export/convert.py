"""Model folder -> verified bundle: ONNX FP32 with a parity check, then FP16/INT8 via karyo.calibration.

The bundle is assembled in a staging folder and renamed into place only when every step passed,
so a failed parity check or a crash never leaves a half-written bundle where a good one was.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from karyo.runtime.bundle import PRECISIONS, Manifest, case_digest, staged_folder, utc_now, write_manifest
from karyo.runtime.cell_size import SizePrior
from karyo.runtime.dataset import Sample, read_labeled_folders
from karyo.runtime.labels import LabelScheme
from karyo.runtime.metrics import classification_report
from karyo.runtime.orientation import DEFAULT_ORIENTATION, both_ways_read, half_turn
from karyo.runtime.preprocess import PreprocessSpec

from karyo.runtime.tensors import load_labeled_tensors

from .data import sample_from_dict, select_scheme_samples, storage_dtype
from .models import configure_tensorflow, require_tensorflow_backend
from .onnx_export import DEFAULT_OPSET, check_parity, keras_probabilities, keras_to_onnx, onnx_probabilities, parity

FP32_FILE = "model.fp32.onnx"
# Parity and FP32 accuracy use at most this many held-out crops: enough to catch a wrong graph
# and to measure accuracy to about +-1%, without making export slower than training.
MAX_EVAL_CROPS = 4000


class ConvertError(ValueError):
    """Bad inputs to convert (missing model folder, no evaluation crops); the message says what to do."""


def read_model_folder(model_dir: Path) -> tuple[dict[str, Any], LabelScheme, PreprocessSpec]:
    """A folder written by `karyo-export train` (convert reads it, so does train --init-from)."""
    config_path = model_dir / "train_config.json"
    for needed in (model_dir / "model.keras", config_path):
        if not needed.is_file():
            raise ConvertError(f"{model_dir}: not a model folder: no {needed.name} (give a folder written by `karyo-export train`)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConvertError(f"{model_dir}: unreadable {config_path.name} ({exc})") from None
    return config, LabelScheme.from_dict(config["labels"]), PreprocessSpec.from_dict(config["preprocess"])


def trained_orientation(config: dict[str, Any]) -> str:
    """Which way up the bundle reads crops by default: "any" for a network trained flipped upside
    down too (`karyo-export train --vflip`), which never learnt that p arm up is a cue, so a
    second read turned half a circle only adds; "p-arm-up" for every other."""
    augment = config.get("augment") or {}
    return "any" if augment.get("vflip") else DEFAULT_ORIENTATION


def _split_samples(model_dir: Path, part: str) -> list[Sample]:
    path = model_dir / "split.json"
    if not path.is_file():
        return []
    split = json.loads(path.read_text(encoding="utf-8"))
    return [sample_from_dict(d) for d in split.get(part, []) if Path(d["path"]).is_file()]


def _training_case_digests(model_dir: Path) -> dict[str, list[str]]:
    """The hashed ids of every case the network was fitted or early-stopped on (split.json's train and
    val cases), so the runtime can warn when it is measured on them; nothing when split.json is gone."""
    path = model_dir / "split.json"
    if not path.is_file():
        return {}
    split = json.loads(path.read_text(encoding="utf-8"))
    cases = {str(c) for part in ("train_cases", "val_cases") for c in split.get(part, [])}
    return {"case_digests": sorted(case_digest(c) for c in cases)}


def _folder_samples(folders: Sequence[str | Path], labels: LabelScheme) -> list[Sample]:
    samples, dropped = select_scheme_samples(read_labeled_folders(list(folders)), labels)
    if dropped:
        print(f"left out {sum(dropped.values())} crops whose label is not in the model's classes", file=sys.stderr)
    return samples


def _even_subset(samples: list[Sample], limit: int) -> list[Sample]:
    if len(samples) <= limit:
        return samples
    index = np.linspace(0, len(samples) - 1, limit).round().astype(int)
    return [samples[i] for i in index]


def _synthetic_calibration(labels: LabelScheme, workdir: Path, progress: bool) -> list[Sample]:
    """Synthetic chromosomes when the training crops are gone: better than no calibration at all."""
    from karyo.export.synth import generate_dataset

    scheme_name = labels.name if labels.name in ("normal24", "seed32") else "normal24"
    root = generate_dataset(workdir / "synthetic", cells=6, scheme=scheme_name, seed=0, progress=progress)
    return [s for s in read_labeled_folders([root]) if s.label in labels]


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for name in ("karyo", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxconverter-common"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return versions


def convert_model(
    model_dir: str | Path,
    out_bundle: str | Path,
    precisions: Sequence[str] = ("fp32", "fp16", "int8"),
    calibration_data: Sequence[str | Path] | str | Path | None = None,
    eval_data: Sequence[str | Path] | str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    progress: bool = True,
    quantization_config: Any = None,
    mirror: bool = False,
) -> Path:
    """Export model_dir to a bundle folder at out_bundle; returns its path.

    `mirror` averages each crop with its mirror image inside the graph (see `keras_to_onnx`):
    measured on the 5 case-wise folds, +0.2 points of crop accuracy (+0.03 after assembly) for
    2.2x the model time; off by default, since speed on the scanner PC is a goal of its own.

    Evaluation crops default to the held-out test split of the model folder; calibration crops to
    its training split (karyo.calibration picks a stratified subset), else synthetic chromosomes.
    """
    started = time.perf_counter()
    model_dir = Path(model_dir)
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise ConvertError(f"unknown precision(s) {', '.join(unknown)}: use {', '.join(PRECISIONS)}")
    try:
        require_tensorflow_backend("karyo-export convert")
    except ValueError as exc:
        raise ConvertError(str(exc)) from None
    config, labels, spec = read_model_folder(model_dir)
    if isinstance(eval_data, (str, Path)):
        eval_data = [eval_data]
    if isinstance(calibration_data, (str, Path)):
        calibration_data = [calibration_data]

    evaluation = _folder_samples(eval_data, labels) if eval_data else _split_samples(model_dir, "test")
    evaluation_source = ", ".join(map(str, eval_data)) if eval_data else f"{model_dir / 'split.json'} (held-out test)"
    if not evaluation:
        raise ConvertError(
            f"{model_dir}: no evaluation crops (split.json has no held-out test crops on disk); pass --eval-data DIR"
        )
    evaluation = _even_subset(evaluation, MAX_EVAL_CROPS)
    eval_set = load_labeled_tensors(evaluation, spec, labels, title="evaluation crops", progress=progress, dtype=storage_dtype(spec))
    if not len(eval_set.y):
        raise ConvertError(f"none of the {len(evaluation)} evaluation crops could be read")

    configure_tensorflow()
    import keras

    model = keras.models.load_model(model_dir / "model.keras", compile=False)
    keras_probs = keras_probabilities(model, eval_set.x, mirror=mirror)
    timings: dict[str, float] = {}
    out_bundle = Path(out_bundle)
    with staged_folder(out_bundle) as stage, tempfile.TemporaryDirectory(prefix="karyo-convert-") as scratch:
        tick = time.perf_counter()
        keras_to_onnx(model, stage / FP32_FILE, opset=opset, mirror=mirror)
        timings["onnx_export_s"] = round(time.perf_counter() - tick, 2)
        onnx_probs = onnx_probabilities(stage / FP32_FILE, eval_set.x)
        check = parity(keras_probs, onnx_probs)
        check_parity(check)
        # the parity check compares one pass with Keras; accuracy is read the way the bundle reads:
        # for "any", that pass is the read as given, and the read turned half a circle joins it
        orientation = trained_orientation(config)
        if orientation != DEFAULT_ORIENTATION:
            onnx_probs, _ = both_ways_read(onnx_probs, onnx_probabilities(stage / FP32_FILE, half_turn(eval_set.x)))
        report = classification_report(eval_set.y, onnx_probs, labels.labels)
        fp32_metrics = {
            "orientation": orientation,
            "n": report["n"],
            "accuracy": report["accuracy"],
            "recall": {k: v["recall"] for k, v in report["per_class"].items()},
            "parity": check,
        }
        if progress:
            print(
                f"FP32 ONNX: parity max abs diff {check['max_abs_diff']:.2e}, top-1 agreement {check['top1_agreement']:.4f}; "
                f"accuracy {report['accuracy']:.4f} on {report['n']} crops read {orientation}",
                file=sys.stderr,
            )
        manifest = Manifest(
            labels=labels,
            preprocess=spec,
            precisions={"fp32": {"file": FP32_FILE, "metrics": fp32_metrics}},
            provenance={
                "created": utc_now(),
                "arch": config.get("arch"),
                "parameters": int(model.count_params()),
                "opset": opset,
                "test_time_augmentation": "mirror" if mirror else None,
                "versions": _versions(),
                "training": {
                    "data_roots": config.get("data_roots", []),
                    "counts": config.get("counts", {}),
                    "class_counts": config.get("class_counts", {}),
                    "seed": config.get("seed"),
                    "epochs_run": config.get("epochs_run"),
                    "cpu_kernels": config.get("cpu_kernels"),
                    "trained": config.get("created"),
                    **_training_case_digests(model_dir),
                },
                "evaluation_source": evaluation_source,
            },
            cell_size=SizePrior.from_dict(config["cell_size"]) if config.get("cell_size") else None,
            orientation=orientation,
        )
        low = [p for p in precisions if p in ("fp16", "int8")]
        if low:
            _add_low_precisions(
                stage, manifest, low, model_dir, labels, calibration_data, evaluation, evaluation_source,
                quantization_config, Path(scratch), progress,
            )
        manifest.provenance["export_seconds"] = round(time.perf_counter() - started, 1)
        write_manifest(stage, manifest)
    if progress:
        have = ", ".join(p for p in PRECISIONS if p in manifest.precisions)
        print(f"wrote bundle {out_bundle} ({have}; reads crops {manifest.orientation}) in "
              f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    return out_bundle


def _add_low_precisions(
    stage: Path,
    manifest: Manifest,
    low: list[str],
    model_dir: Path,
    labels: LabelScheme,
    calibration_data: Sequence[str | Path] | None,
    evaluation: list[Sample],
    evaluation_source: str,
    quantization_config: Any,
    scratch: Path,
    progress: bool,
) -> None:
    """FP16/INT8 through karyo.calibration; an INT8 gate failure leaves the bundle without INT8 and says why."""
    try:
        from karyo.calibration import GateFailedError, add_low_precisions
    except ImportError:
        try:
            from karyo.calibration.pipeline import GateFailedError, add_low_precisions
        except ImportError as exc:
            print(f"skipped {', '.join(low)}: karyo.calibration is not available ({exc})", file=sys.stderr)
            manifest.provenance["skipped_precisions"] = low
            return
    if calibration_data:
        calibration = _folder_samples(calibration_data, labels)
        source = ", ".join(map(str, calibration_data))
    else:
        calibration = _split_samples(model_dir, "train")
        source = f"{model_dir / 'split.json'} (training crops)"
        if not calibration:
            calibration = _synthetic_calibration(labels, scratch, progress)
            source = "synthetic chromosomes (training crops not found)"
    try:
        add_low_precisions(
            stage, manifest, calibration, evaluation, precisions=tuple(low), config=quantization_config,
            progress=progress, calibration_source=source, evaluation_source=evaluation_source,
        )
    except GateFailedError as exc:
        print(f"INT8 left out of the bundle: {exc}", file=sys.stderr)
        manifest.provenance["int8_rejected"] = str(exc)
