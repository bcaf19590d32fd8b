"""`karyo-export train | convert | demo`: thin typer wrappers; the work lives in train.py, convert.py, demo.py."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, TypeVar

import typer

from karyo.runtime.labels import SCHEME_NAMES
from karyo.runtime.preprocess import DEFAULT_STAIN_LEVEL

from .augment import DEFAULT_CONDENSATION, DEFAULT_NEIGHBOUR_PROBABILITY
from .models import DEFAULT_EDGE_HEAD
from .time_budget import DEFAULT_TIME_BUDGET_MIN, minutes_text
from .train import DEFAULT_EPOCHS

F = TypeVar("F", bound=Callable[..., Any])


def _user_errors(command: F) -> F:
    """Errors a user can act on (bad folder, bad option, failed parity) -> `error: ...` and exit 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from karyo.runtime.bundle import BundleError

        from .onnx_export import ExportError

        try:
            return command(*args, **kwargs)
        except (BundleError, ExportError, ValueError, OSError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@_user_errors
def train_command(
    data: List[Path] = typer.Argument(..., help="Labeled folders (class sub-folders like 1, 01, chr_01, clase1, X, or manifest.csv)."),
    out: Path = typer.Option(..., "--out", help="Model folder to write (model.keras, train_config.json, report.json, confusion.png, split.json)."),
    arch: str = typer.Option("edge", "--arch", help="edge (compact, INT8-friendly) or seed-dcnn (the reference study's network)."),
    scheme: str = typer.Option("normal24", "--scheme", help=f"Label scheme: {', '.join(SCHEME_NAMES)}."),
    epochs: int = typer.Option(DEFAULT_EPOCHS, "--epochs", min=1, help="Maximum epochs (early stopping on held-out cases)."),
    time_budget: Optional[float] = typer.Option(None, "--time-budget", min=0.0, help=f"Minutes per model, reading the crops included: on a machine too slow for every epoch the learning-rate schedule is shortened to end in time, and the run says so (default: {DEFAULT_TIME_BUDGET_MIN:g} for the default recipe, none once --epochs, --width, --arch or --input-size is chosen; 0: every epoch, however long)."),
    input_size: Optional[str] = typer.Option(None, "--input-size", "--image-size", help="Model input HEIGHTxWIDTH px, or one number for a square (default: 96x32 for edge, 300 for seed-dcnn)."),
    folds: int = typer.Option(0, "--folds", min=0, help="Case-wise k-fold cross-validation (0: one train/val/test split)."),
    fold: Optional[int] = typer.Option(None, "--fold", min=1, help="With --folds K: train only fold N (1..K), e.g. one fold per machine; the folder holds that fold's model and held-out cases."),
    seed: int = typer.Option(0, "--seed", help="Seed for splits, augmentation and weights."),
    val_fraction: float = typer.Option(0.12, "--val-fraction", min=0.0, max=0.5, help="Share of the training cases held back for early stopping (0: train on every case; the cosine schedule then simply runs its --epochs)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    learning_rate: float = typer.Option(2e-3, "--learning-rate", min=0.0),
    label_smoothing: float = typer.Option(0.05, "--label-smoothing", min=0.0, max=0.5),
    patience: int = typer.Option(8, "--patience", min=1, help="Epochs without a better validation loss before training stops (the best epoch is kept); raise it with --epochs."),
    width: float = typer.Option(1.0, "--width", min=0.25, max=4.0, help="edge channel multiplier (1.0: 16/32/64/128 channels; 1.25: 16/40/80/160, about 1.4x the training time)."),
    head: Optional[str] = typer.Option(None, "--head", help=f"edge's head (default {DEFAULT_EDGE_HEAD}): rows keeps one feature vector per place along the chromosome, pool averages the whole last feature map (the earlier design)."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Start from the weights of an earlier `karyo-export train` folder with the same network, input and labels (e.g. another lab's model, or one trained on `karyo-export synth` chromosomes)."),
    vflip: bool = typer.Option(False, "--vflip", help="Also flip crops upside down (for labs whose crops are not p-arm up)."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Train on the crops as they are."),
    condensation: float = typer.Option(DEFAULT_CONDENSATION, "--condensation", min=0.0, max=1.0, help="Augmentation: scale each chromosome's length-to-width ratio by up to 1+C either way, as cells and labs condense their chromosomes differently (0: off)."),
    neighbours: float = typer.Option(DEFAULT_NEIGHBOUR_PROBABILITY, "--neighbours", min=0.0, max=1.0, help="Augmentation: the share of training crops that get a piece of another chromosome laid in through the box's edge, as neighbours reach into crops cut as bounding boxes (default 0: off; 0.15 measured, benchmarks/ACCURACY.md)."),
    stain_level: float = typer.Option(DEFAULT_STAIN_LEVEL, "--stain-level", min=0.0, max=1.0, help="Scale each chromosome's darkness so its 95th percentile reaches this level, evening out staining between slides and labs (0: keep gray levels as they are)."),
    exclude: Optional[Path] = typer.Option(None, "--exclude", help="Crops not to train on: a CSV with a path column (e.g. `karyo audit --csv`, the rows a lab could not settle) or one path per line; held-out crops keep their labels."),
    centred_crop: bool = typer.Option(True, "--centred-crop/--no-centred-crop", help="Crops are cut centred on their chromosome, so a neighbour merged into it is cut off beyond the mirror of the opposite margin; --no-centred-crop for a lab whose crops hold the chromosome against one side."),
) -> None:
    """Train a chromosome classifier; the split is by case (patient), never by image.

    Runs on Keras' TensorFlow backend, or under JAX (KERAS_BACKEND=jax, e.g. a GPU without a
    TensorFlow build for its CUDA); convert then runs under TensorFlow.
    """
    from .augment import AugmentConfig
    from .models import parse_input_size
    from .train import train_model

    augment = None if no_augment else AugmentConfig(vflip=vflip, condensation=condensation, neighbour_probability=neighbours)
    size = parse_input_size(input_size) if input_size else None
    out_dir = train_model(
        data, out, arch=arch, scheme=scheme, epochs=epochs, input_size=size, folds=folds, only_fold=fold, seed=seed,
        batch_size=batch_size, learning_rate=learning_rate, label_smoothing=label_smoothing, patience=patience, augment=augment,
        val_fraction=val_fraction, width=width, head=head, init_from=init_from, stain_level=stain_level,
        centred_crop=centred_crop, exclude=exclude, time_budget=time_budget,
    )
    report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    budget = report.get("history", {}).get("time_budget") or {}
    if budget.get("cuts"):
        typer.echo(f"trained {budget['planned_epochs']} of {budget['asked_epochs']} epochs to stay within "
                   f"{minutes_text(budget['minutes'])} (--time-budget 0 for all)")
    if report.get("cross_validation"):
        cv = report["cross_validation"]
        typer.echo(f"{cv['k']}-fold by case: accuracy {cv['accuracy_mean']:.4f} +- {cv['accuracy_std']:.4f}")
    if report.get("test"):
        typer.echo(f"held-out test accuracy {report['test']['accuracy']:.4f} on {report['test']['n']} crops")
    typer.echo(f"model folder: {out_dir}")


@_user_errors
def convert_command(
    model_dir: Path = typer.Argument(..., help="Model folder written by `karyo-export train`."),
    out: Path = typer.Option(..., "--out", help="Bundle folder to write (replaced atomically)."),
    precisions: str = typer.Option("fp32,fp16,int8", "--precisions", help="Comma-separated: fp32,fp16,int8 (fp32 is always made)."),
    calibration_data: Optional[List[Path]] = typer.Option(None, "--calibration-data", help="Labeled folder for INT8 calibration (default: the training crops)."),
    eval_data: Optional[List[Path]] = typer.Option(None, "--eval-data", help="Labeled folder for parity and accuracy (default: the held-out test split)."),
    mirror: bool = typer.Option(False, "--mirror/--no-mirror", help="Average each crop with its mirror image inside the graph: +0.2 points of crop accuracy for 2.2x the model time."),
) -> None:
    """Export to ONNX, check FP32 parity with Keras, add FP16/INT8 with measured drift; write a verified bundle."""
    from .convert import convert_model

    chosen = [p.strip().lower() for p in precisions.split(",") if p.strip()]
    if "fp32" not in chosen:
        chosen.insert(0, "fp32")
    bundle = convert_model(
        model_dir, out, precisions=chosen, calibration_data=calibration_data or None, eval_data=eval_data or None,
        mirror=mirror,
    )
    from karyo.runtime.bundle import load_bundle

    loaded = load_bundle(bundle)
    for precision in loaded.available_precisions:
        metrics = loaded.metrics(precision)
        size = loaded.model_path(precision).stat().st_size / 1e6
        typer.echo(f"{precision:<5} {size:6.2f} MB  accuracy {metrics.get('accuracy', float('nan')):.4f}")
    typer.echo(f"bundle: {bundle}")
    missing = [p for p in chosen if p not in loaded.available_precisions]
    if missing:
        # The bundle is still usable at the precisions that passed, but what was asked for is not
        # there: a script must not mistake this for success.
        reason = loaded.manifest.provenance.get("int8_rejected", "see the messages above")
        typer.echo(f"error: {', '.join(missing)} not written: {reason}", err=True)
        raise typer.Exit(1)


@_user_errors
def demo_command(
    out: Path = typer.Option(..., "--out", help="Folder for data/, model/ and bundle/."),
    fast: bool = typer.Option(False, "--fast", help="Toy scale (under a minute); accuracy is not meaningful."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Synthesize chromosomes, train `edge`, export FP32/FP16/INT8, classify one synthetic cell; prints timings."""
    from .demo import format_summary, run_demo

    result = run_demo(out, fast=fast, seed=seed, progress=True)
    sys.stderr.flush()
    typer.echo(format_summary(result))
