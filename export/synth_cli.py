"""`karyo-export synth`: write a synthetic labeled dataset (for the demo, calibration and tests)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from karyo.runtime.labels import SCHEME_NAMES


def synth_command(
    out: Path = typer.Option(..., "--out", help="Folder to create (class folders + manifest.csv)."),
    cells: int = typer.Option(60, "--cells", min=1, help="Metaphases to draw (about 46 crops each)."),
    scheme: str = typer.Option("normal24", "--scheme", help=f"Label scheme: {', '.join(SCHEME_NAMES)}."),
    size: int = typer.Option(100, "--size", min=20, help="Height of chromosome 1 in px (100 = scanner crops, 300 for a 300 px model)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same pixels."),
) -> None:
    """Draw synthetic G-banded chromosomes from the hg19 band table, in the layout of real data."""
    from karyo.export.synth import generate_dataset

    started = time.perf_counter()
    try:
        generate_dataset(out, cells=cells, scheme=scheme, size=size, seed=seed, progress=True)
    except ValueError as exc:  # bad scheme, occupied folder, impossible karyotype: one line, non-zero exit
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(code=2) from None
    manifest = out / "manifest.csv"
    crops = sum(1 for _ in manifest.open(encoding="utf-8")) - 1
    typer.echo(f"wrote {crops} crops from {cells} cells to {out} ({time.perf_counter() - started:.1f} s); labels in {manifest}")
