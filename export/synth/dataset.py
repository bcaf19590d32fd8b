"""Synthetic cells and labeled datasets in the same layout as real data (class folders + manifest.csv).

A new user has no crops and cannot download any, so the demo trains on these; calibration and tests
use them as small, license-free stand-ins. Every case is one synthetic patient whose cells share a
constitutional karyotype, so case-wise splits behave as they do on real data.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from karyo.runtime.bundle import atomic_write_text, staged_folder
from karyo.runtime.labels import chromosome_of
from karyo.runtime.labels import scheme as label_scheme
from karyo.runtime.progress import Progress

from .bands import load_band_table
from .karyotype import case_karyotype, parse_karyotype
from .render import render_chromosome, sample_cell_style
from .variants import band_profile

MARKER_NAME = "synth.json"  # marks a folder as ours, so a re-run may replace it


def render_cell(karyotype: str = "46,XY", seed: int = 0, size: int = 100) -> list[tuple[str, np.ndarray]]:
    """(label, crop) for every chromosome of one metaphase; crops are uint8, dark bands on white.

    `size` is the nominal height of chromosome 1 in pixels (100 matches scanner crops).
    The same karyotype, seed and size always give the same pixels.
    """
    return _render_labels(parse_karyotype(karyotype), seed, size)


def _render_labels(labels: list[str], seed: int, size: int, keep: frozenset[str] | None = None) -> list[tuple[str, np.ndarray]]:
    """Draw a cell's chromosomes, skipping labels outside `keep`. Each chromosome has its own random
    stream (spawned from the cell's), so skipping some never changes the pixels of the others."""
    if size < 20:
        raise ValueError(f"size {size} is too small to draw bands (use 20 or more; 100 matches scanner crops)")
    table = load_band_table()
    rng = np.random.default_rng(seed)
    style = sample_cell_style(rng, size)
    crops = []
    for label, child in zip(labels, rng.spawn(len(labels))):
        if keep is not None and label not in keep:
            continue
        profile = band_profile(label, table[chromosome_of(label)], child)
        crops.append((label, render_chromosome(profile, style, child)))
    return crops


def _cell_seed(seed: int, case_index: int, cell_index: int) -> int:
    return int(np.random.SeedSequence([seed, case_index, cell_index]).generate_state(1)[0])


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER_NAME).is_file():
        raise ValueError(f"{out} is not empty and was not made by `karyo-export synth`; choose a new folder")


def generate_dataset(out: str | Path, cells: int, scheme: str = "normal24", size: int = 100, seed: int = 0,
                     progress: bool = True, cells_per_case: int = 3) -> Path:
    """Write `out/<label>/<case>_<cell>_<k>.png` and `out/manifest.csv` (path,label,case,cell).

    Only the scheme's classes are written (a binary scheme writes the parent chromosome and its
    variant, one of each per cell). The whole folder is built in a temporary sibling and renamed
    into place at the end, so `out` is never half-written; an existing `out` is replaced only if
    an earlier run of this generator made it.
    """
    if cells < 1:
        raise ValueError("cells must be at least 1")
    chosen = label_scheme(scheme)
    out = Path(out)
    _check_target(out)
    wanted = frozenset(chosen.labels)
    rows: list[tuple[str, str, str, str]] = []
    meter = Progress(cells, "synth: cells", progress)
    with staged_folder(out) as stage:
        for folder in chosen.labels:
            (stage / folder).mkdir()
        for index in range(cells):
            case_index, cell_index = divmod(index, max(1, cells_per_case))
            case = f"synth{case_index + 1:04d}"
            cell = f"{cell_index + 1:02d}"
            karyotype = case_karyotype(chosen.name, case_index)
            copies: dict[str, int] = {}
            labels = parse_karyotype(karyotype)
            for label, crop in _render_labels(labels, _cell_seed(seed, case_index, cell_index), size, wanted):
                k = copies.get(label, 0)
                copies[label] = k + 1
                relative = f"{label}/{case}_{cell}_{k}.png"
                ok, encoded = cv2.imencode(".png", crop)
                if not ok:
                    raise RuntimeError(f"could not encode {relative}")
                (stage / relative).write_bytes(encoded.tobytes())
                rows.append((relative, label, case, cell))
            meter.update(index + 1, f", {len(rows)} crops")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "label", "case", "cell"])
        writer.writerows(rows)
        atomic_write_text(stage / "manifest.csv", buffer.getvalue())
        marker = {"generator": "karyo.export.synth", "scheme": chosen.name, "cells": cells, "size": size,
                  "seed": seed, "cells_per_case": cells_per_case, "crops": len(rows)}
        atomic_write_text(stage / MARKER_NAME, json.dumps(marker, indent=2) + "\n")
    meter.close()
    missing = [label for label in chosen.labels if label not in {row[1] for row in rows}]
    if missing:  # seed32 needs about 15 cells before every X variant has had its case
        print(f"synth: warning: no crops for {', '.join(missing)}; draw more cells", file=sys.stderr)
    return out
