"""`karyo classify`: label crop files or folders with a bundle; one bad file never stops the rest."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .cli_common import (
    EXIT_OK, EXIT_SOME_FAILED, ORIENTATION_HELP, OrientationChoice, PrecisionChoice, ProviderChoice, fail, orientation_value,
    provider_line, stderr_progress, user_errors,
)


def expand_paths(paths: list[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files as given (in order), folders expanded to their images (sorted, recursive); empty folders are errors."""
    from .dataset import iter_images

    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for path in paths:
        if path.is_dir():
            found = list(iter_images(path))
            if not found:
                problems.append((str(path), f"{path}: folder holds no PNG/TIFF/BMP/JPEG images"))
            files.extend(found)
        else:
            files.append(path)  # a missing or unreadable file becomes that item's error
    return files, problems


def _top_k_text(top_k: list[tuple[str, float]]) -> str:
    return " ".join(f"{label}:{p:.3f}" for label, p in top_k)


def _table(rows: list[dict]) -> str:
    width = max([len("path")] + [len(str(r["path"])) for r in rows])
    lines = [f"{'path':<{width}}  {'label':<15} {'prob':>6}  top-k"]
    for r in rows:
        if r["error"]:
            lines.append(f"{str(r['path']):<{width}}  {'ERROR':<15} {'-':>6}  {r['error']}")
        else:
            top = " ".join(f"{t['label']}:{t['probability']:.3f}" for t in r["top_k"])
            lines.append(f"{str(r['path']):<{width}}  {r['label']:<15} {r['probability']:>6.3f}  {top}")
    return "\n".join(lines)


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "probability", "top_k", "error"])
    for r in rows:
        top = ";".join(f"{t['label']}:{t['probability']:.6f}" for t in r["top_k"])
        prob = "" if r["probability"] is None else f"{r['probability']:.6f}"
        writer.writerow([r["path"], r["label"] or "", prob, top, r["error"] or ""])
    return buffer.getvalue()


@user_errors
def classify(
    bundle: Path = typer.Argument(..., metavar="BUNDLE", help="Bundle folder (with manifest.json)."),
    paths: List[Path] = typer.Argument(..., metavar="PATH", help="Crop image files and/or folders (searched recursively)."),
    precision: PrecisionChoice = typer.Option(PrecisionChoice.auto, "--precision", help="auto: fp16 on CUDA, int8 on CPU, else fp32."),
    provider: ProviderChoice = typer.Option(ProviderChoice.auto, "--provider", help="auto uses CUDA when it really works."),
    top_k: int = typer.Option(3, "--top-k", min=1, help="How many ranked labels to report per crop."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV (path,label,probability,top_k,error)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads per inference (default: KARYO_THREADS, else all cores)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Crops per inference call."),
    orientation: Optional[OrientationChoice] = typer.Option(None, "--orientation", help=ORIENTATION_HELP),
) -> None:
    """Classify chromosome crops. Exit 0: all classified; 1: some files failed (the rest are reported); 2: bad usage/bundle."""
    from .classifier import Classifier

    if as_json and as_csv:
        raise fail("choose one of --json and --csv")
    files, problems = expand_paths(paths)
    classifier = Classifier(bundle, precision=precision.value, provider=provider.value, threads=threads,
                            batch_size=batch_size, orientation=orientation_value(orientation))
    if classifier.warning:
        typer.echo(f"warning: {classifier.warning}", err=True)
    if not (as_json or as_csv):
        typer.echo(provider_line(classifier, provider.value), err=True)
    predictions = classifier.predict_paths(files, top_k=top_k, progress=stderr_progress("classifying"))
    rows = [p.to_dict() for p in predictions] + [
        {"path": path, "label": None, "probability": None, "top_k": [], "error": message} for path, message in problems
    ]
    for row in rows:
        if row["error"]:
            typer.echo(f"error: {row['error']}", err=True)
    if as_json:
        document = {
            "bundle": str(bundle),
            "provider": classifier.provider,
            "precision": classifier.precision,
            "precision_reason": classifier.precision_reason,
            "warning": classifier.warning,
            "cuda_unavailable": classifier.cuda_reason,
            "orientation": classifier.orientation,
            "results": rows,
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    elif as_csv:
        sys.stdout.write(_csv(rows))
    else:
        typer.echo(_table(rows))
    raise typer.Exit(EXIT_SOME_FAILED if any(row["error"] for row in rows) else EXIT_OK)
