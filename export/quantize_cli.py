"""`karyo-export quantize`: redo FP16/INT8 for an existing bundle, e.g. with a lab's own calibration crops.

Calibration on the lab's own scanner images is the main reason to re-quantize: ranges measured on
another lab's crops (or on synthetic ones) may not cover its contrast. The FP32 model is never
touched; the bundle is replaced only when the new INT8 passes the gate.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer

from karyo.runtime.bundle import Bundle, BundleError, load_bundle
from karyo.runtime.dataset import Sample, read_labeled_folders

from .data import sample_from_dict

SPLIT_SUFFIX = " (held-out test)"


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _labeled(folders: list[Path], bundle: Bundle) -> list[Sample]:
    samples = read_labeled_folders(list(folders))
    kept = [s for s in samples if s.label in bundle.labels]
    if len(kept) < len(samples):
        typer.echo(f"left out {len(samples) - len(kept)} crops whose label is not in the model's classes", err=True)
    return kept


def recorded_evaluation(bundle: Bundle) -> tuple[list[Sample], str]:
    """The evaluation crops the bundle was measured on, if they are still on disk.

    The export records either the folders it was given or the model folder's split.json (held-out
    test cases); both are read back here. Raises ValueError with what to pass instead.
    """
    record = bundle.manifest.provenance.get("evaluation") or {}
    source = str(record.get("source") or bundle.manifest.provenance.get("evaluation_source") or "")
    if not source:
        raise ValueError(f"{bundle.path}: the manifest records no evaluation data; pass --eval-data DIR")
    if source.endswith(SPLIT_SUFFIX) or source.endswith("split.json"):
        split_path = Path(source.removesuffix(SPLIT_SUFFIX))
        if not split_path.is_file():
            raise ValueError(f"recorded evaluation split {split_path} no longer exists; pass --eval-data DIR")
        split = json.loads(split_path.read_text(encoding="utf-8"))
        samples = [
            sample_from_dict(d) for d in split.get("test", []) if Path(d["path"]).is_file() and str(d["label"]) in bundle.labels
        ]
    else:
        folders = [Path(part.strip()) for part in source.split(", ") if part.strip()]
        missing = [str(f) for f in folders if not f.is_dir()]
        if missing:
            raise ValueError(f"recorded evaluation data {', '.join(missing)} no longer exists; pass --eval-data DIR")
        samples = _labeled(folders, bundle)
    if not samples:
        raise ValueError(f"recorded evaluation data {source} holds no usable crops now; pass --eval-data DIR")
    return samples, source


def synthetic_calibration(bundle: Bundle, workdir: Path) -> list[Sample]:
    try:
        from karyo.export.synth import generate_dataset
    except ImportError as exc:  # synth not installed in this build
        raise ValueError(f"no --calibration-data given and synthetic chromosomes are unavailable ({exc})") from None
    name = bundle.labels.name if bundle.labels.name in ("normal24", "seed32") else "normal24"
    root = generate_dataset(workdir / "synthetic", cells=6, scheme=name, seed=0, progress=True)
    return [s for s in read_labeled_folders([root]) if s.label in bundle.labels]


def quantize_command(
    bundle_path: Path = typer.Argument(..., help="Bundle folder to update (replaced atomically)."),
    calibration_data: Optional[list[Path]] = typer.Option(
        None, "--calibration-data", help="Labeled folder(s) of crops for INT8 calibration (default: synthetic chromosomes)."
    ),
    eval_data: Optional[list[Path]] = typer.Option(
        None, "--eval-data", help="Labeled folder(s) for measuring drift (default: the data recorded in the bundle)."
    ),
    method: Optional[str] = typer.Option(None, "--method", help="Calibration method: minmax, entropy or percentile."),
    min_agreement: Optional[float] = typer.Option(
        None, "--min-agreement", help="Gate: INT8 top-1 agreement with FP32 on the crops FP32 reads decisively (default 0.99)."
    ),
    tie_margin: Optional[float] = typer.Option(
        None, "--tie-margin",
        help="Gate: crops whose FP32 top class leads the runner-up by less than this are ties, left out of the agreement (default 0.1; 0 gates on every crop).",
    ),
    max_accuracy_drop: Optional[float] = typer.Option(
        None, "--max-accuracy-drop", help="Gate: accuracy FP32 minus INT8, as a fraction (default 0.005 = 0.5 points)."
    ),
    drop_significance: Optional[float] = typer.Option(
        None, "--drop-significance",
        help="Gate: a drop past --max-accuracy-drop fails when a sign test over the answers INT8 changed gives p below "
        "this (default 0.05; 1 fails every such drop).",
    ),
    reduce_range: Optional[bool] = typer.Option(
        None, "--reduce-range/--full-range",
        help="7-bit weights, right on every x86 CPU (the default for new bundles), or 8-bit, right only on CPUs with "
        "VNNI (default: as the bundle was made).",
    ),
) -> None:
    """Redo the FP16 and INT8 models of a bundle, measure drift against FP32 and gate INT8."""
    from karyo.calibration import GateFailedError, QuantizationConfig, quantize_bundle
    from karyo.calibration.config import GateConfig

    try:
        bundle = load_bundle(bundle_path)
        previous = bundle.manifest.provenance.get("calibration", {}).get("config", {})
        config = QuantizationConfig.from_dict(previous) if previous else QuantizationConfig()
        asked = {"min_agreement": min_agreement, "max_accuracy_drop": max_accuracy_drop, "tie_margin": tie_margin,
                 "drop_significance": drop_significance}
        config.gate = GateConfig(**{**config.gate.to_dict(), **{k: v for k, v in asked.items() if v is not None}})
        if method is not None:
            config = QuantizationConfig.from_dict({**config.to_dict(), "method": method, "gate": config.gate.to_dict()})
        if reduce_range is not None:
            config.reduce_range = reduce_range
        if eval_data:
            evaluation, eval_source = _labeled(list(eval_data), bundle), ", ".join(map(str, eval_data))
        else:
            evaluation, eval_source = recorded_evaluation(bundle)
            typer.echo(f"evaluating on the recorded data: {eval_source} ({len(evaluation)} crops)", err=True)
        with tempfile.TemporaryDirectory(prefix="karyo-quantize-") as scratch:
            if calibration_data:
                calibration = _labeled(list(calibration_data), bundle)
                calibration_source = ", ".join(map(str, calibration_data))
            else:
                typer.echo("no --calibration-data: calibrating on synthetic chromosomes", err=True)
                calibration = synthetic_calibration(bundle, Path(scratch))
                calibration_source = "synthetic chromosomes (karyo.export.synth, seed 0)"
            result = quantize_bundle(
                bundle.path, calibration, evaluation, config, progress=True,
                calibration_source=calibration_source, evaluation_source=eval_source,
            )
    except GateFailedError as exc:
        _fail(f"{exc} (bundle left unchanged)")
    except (BundleError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    sys.stderr.flush()
    typer.echo(result["table"])
    typer.echo(f"INT8: {result.get('remedy', 'not made')}; bundle updated: {bundle.path}")
