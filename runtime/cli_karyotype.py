"""`karyo karyotype`: classify one or more cells' crops, assemble each cell and call its karyotype.

A CELL is a folder with one metaphase's crops (images at any depth; class folders, if any, are
ignored for prediction). With `--by-cell DATA`, cells come from a labeled tree grouped by
case+cell (its manifest, or folders), and the true karyotype is shown next to the call.
Each case's cells (or, with `--case NAME`, all CELL folders given) are then put together into the
patient's karyotype with cell counts (``karyo.runtime.case_summary``).
A crop that cannot be read is reported and left out of its cell; the exit code is 1 then.
`--relabel CROP=LABEL` sets crops to what a reviewer read them as and assembles their cells again
around them (``Karyotyper.correct``). The reading and calling itself is ``karyo.runtime.karyotyper``'s.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

import typer

from .bundle import BundleError
from .case_summary import CaseSummary, CellCall, case_line, summarize_cases
from .dataset import UNKNOWN, iter_images, read_labeled_folder
from .labels import parse_label
from .karyotype import CONSTITUTIONAL_TRISOMIES, AssemblyPriors, KaryotypeCall, call_karyotype
from .cli_common import (
    DEFAULT_TRISOMY_CHOICE, ORIENTATION_HELP, TRISOMIES_HELP, OrientationChoice, PrecisionChoice, ProviderChoice,
    TrisomyChoice, orientation_value, provider_line, stderr_progress,
)


@dataclass
class CellInput:
    name: str
    paths: list[Path]
    truth: list[str] | None = None
    slug: str = ""  # file name stem for its karyogram
    case: str | None = None  # the patient, for the case summary (None: no summary)


def load_karyotyper(bundle: Path, precision: str, provider: str, orientation: str | None, trisomies: str,
                    priors: AssemblyPriors) -> Any:
    """The one place this command opens a model; imported here so `karyo --help` does not load ONNX Runtime."""
    from .karyotyper import Karyotyper

    return Karyotyper(bundle, precision=precision, provider=provider, orientation=orientation, trisomies=trisomies,
                      priors=priors)


def _cells_from_folders(folders: list[Path], case: str | None = None) -> list[CellInput]:
    cells = []
    for folder in folders:
        if not folder.is_dir():
            raise ValueError(f"{folder}: not a folder (a CELL is a folder of one cell's crops)")
        paths = list(iter_images(folder))
        if not paths:
            raise ValueError(f"{folder}: no images (.png, .tif, .tiff, .bmp, .jpg)")
        cells.append(CellInput(str(folder), paths, slug=folder.resolve().name, case=case))
    return cells


def _cells_from_tree(data: Path, wanted: list[str]) -> list[CellInput]:
    grouped: dict[str, list] = defaultdict(list)
    for sample in read_labeled_folder(data):
        grouped[sample.cell_key].append(sample)
    keys = wanted or list(grouped)
    unknown = [k for k in keys if k not in grouped]
    if unknown:
        raise ValueError(f"{data}: no cell {', '.join(unknown)} (cells are named case/cell, e.g. {next(iter(grouped))})")
    return [CellInput(k, [s.path for s in grouped[k]], [s.label for s in grouped[k]], slug=k,
                      case=None if grouped[k][0].case == UNKNOWN else grouped[k][0].case) for k in keys]


def _relabels(given: list[str], cells: list[CellInput]) -> dict[int, dict[str, str]]:
    """`--relabel CROP=LABEL` values as {cell number: {crop as the cell names it: label}}; a crop
    is matched by its file (any spelling of its path), and one that is no crop of the cells given
    is refused before anything is classified."""
    where = {path.resolve(): (number, str(path)) for number, cell in enumerate(cells) for path in cell.paths}
    relabels: dict[int, dict[str, str]] = defaultdict(dict)
    for item in given:
        crop, sep, label = item.rpartition("=")
        if not sep or not crop or not label:
            raise ValueError(f"--relabel {item}: write CROP=LABEL, e.g. cell1/07.png=5")
        found = where.get(Path(crop).resolve())
        if found is None:
            raise ValueError(f"--relabel {item}: {crop} is not a crop of the cells given")
        relabels[found[0]][found[1]] = label
    return dict(relabels)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "cell"


def _karyogram_targets(target: Path, cells: list[CellInput]) -> list[Path]:
    if len(cells) == 1 and target.suffix.lower() == ".png":
        return [target]
    if target.suffix.lower() == ".png":
        raise ValueError(f"--karyogram {target}: several cells need a folder (one PNG per cell)")
    names: list[str] = []
    for cell in cells:
        base = _safe_name(cell.slug or cell.name)
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return [target / f"{name}.png" for name in names]


def possible_swaps(call: KaryotypeCall) -> list[str]:
    """Each crop flagged with its likely exchange partner, as "4 <-> 5", every pair once (in crop order)."""
    seen: set[tuple[int, int]] = set()
    pairs = []
    for a in call.assignments:
        if a.swap_with is None:
            continue
        first, second = sorted((a.index, a.swap_with))
        if (first, second) not in seen:
            seen.add((first, second))
            pairs.append(f"{call.assignments[first].label} <-> {call.assignments[second].label}")
    return pairs


def other_checks(call: KaryotypeCall) -> list[str]:
    """Flagged crops that are not part of a possible swap, as "7 (5?)": placed as 7, check against 5.

    The plain line is what a reviewer scans first; a count of crops to review says how much work
    there is, this says where to look and what to look for without opening the karyogram."""
    return [f"{a.label} ({a.check_against}?)" for a in call.assignments
            if a.review and a.swap_with is None and a.alternative is not None]


def cell_line(name: str, call: KaryotypeCall, truth: KaryotypeCall | None = None, failed: int = 0, turned: int = 0,
              relabelled: int = 0) -> str:
    """One plain line per cell: the call, how many crops and what to look at (`karyo watch` prints it too)."""
    reviews = sum(a.review for a in call.assignments)
    parts = [f"{call.count} crops"] + ([f"{turned} read turned"] if turned else []) + (
        [f"{relabelled} relabelled"] if relabelled else []) + (
        [f"{reviews} to review"] if reviews else []) + ([f"{failed} unreadable"] if failed else [])
    line = f"{name}: {call.karyotype}  ({', '.join(parts)})"
    if call.findings:
        line += "  " + "; ".join(call.findings)
    swaps = possible_swaps(call)
    if swaps:
        line += "  possible swap" + ("s" if len(swaps) > 1 else "") + ": " + ", ".join(swaps)
    checks = other_checks(call)
    if checks:
        line += "  check: " + ", ".join(checks)
    if truth is not None:
        line += f"  [truth {truth.karyotype}{'' if truth.karyotype == call.karyotype else ' MISMATCH'}]"
    return line


def karyotype(
    bundle: Path = typer.Argument(..., help="Bundle folder (normal24 or seed32 labels)."),
    cells: Optional[List[Path]] = typer.Argument(None, help="Folders, one per cell; with --by-cell: case/cell keys (default all)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    karyogram: Optional[Path] = typer.Option(None, "--karyogram", help="PNG for one cell, or a folder (one PNG per cell)."),
    by_cell: Optional[Path] = typer.Option(None, "--by-cell", help="Take cells from this labeled tree (case+cell); each case is also summarized."),
    case: Optional[str] = typer.Option(None, "--case", help="The CELL folders are this patient's: add its karyotype with cell counts (mosaics, clone rule)."),
    precision: PrecisionChoice = typer.Option(PrecisionChoice.auto, "--precision", help="auto: fp16 on CUDA, int8 on CPU, else fp32."),
    provider: ProviderChoice = typer.Option(ProviderChoice.auto, "--provider", help="auto uses CUDA when it really works."),
    review_margin: float = typer.Option(0.2, "--review-margin", min=0.0, max=1.0,
                                        help="Flag crops whose top-1 leads the runner-up by less than this."),
    review_swap_odds: float = typer.Option(10.0, "--review-swap-odds", min=1.0,
                                           help="Flag two crops when exchanging their labels is at least 1/N as likely (1: off)."),
    review_recount_odds: float = typer.Option(10.0, "--review-recount-odds", min=1.0,
                                              help="Flag a crop when labelling it otherwise, with the karyotype that makes, is at least 1/N as likely (1: off)."),
    orientation: Optional[OrientationChoice] = typer.Option(None, "--orientation", help=ORIENTATION_HELP),
    trisomies: TrisomyChoice = typer.Option(DEFAULT_TRISOMY_CHOICE, "--trisomies", help=TRISOMIES_HELP),
    relabel: Optional[List[str]] = typer.Option(
        None, "--relabel", help="CROP=LABEL (repeatable): a crop you labelled on review; its cell is assembled around it."),
) -> None:
    """Karyotype call per cell (e.g. 46,XY / 47,XX,+21 / 45,X), with optional karyogram PNGs."""
    try:
        if by_cell is not None and case is not None:
            raise ValueError("--case names the patient of CELL folders; with --by-cell the tree's cases are used")
        if by_cell is not None:
            inputs = _cells_from_tree(by_cell, [str(c) for c in cells or []])
        elif not cells:
            raise ValueError("give one or more CELL folders, or --by-cell DATA")
        else:
            inputs = _cells_from_folders(list(cells), case)
        targets = _karyogram_targets(karyogram, inputs) if karyogram is not None else []
        relabels = _relabels(relabel or [], inputs)
        priors = AssemblyPriors.for_trisomies(trisomies.value, review_margin=review_margin,
                                              review_swap_odds=review_swap_odds, review_recount_odds=review_recount_odds)
        # a binary bundle has no karyotype to assemble: refused here, before any crop is classified
        karyotyper = load_karyotyper(bundle, precision.value, provider.value, orientation_value(orientation),
                                     trisomies.value, priors)
        classifier = karyotyper.classifier
        for wanted in relabels.values():
            for crop, label in wanted.items():
                if parse_label(label) not in classifier.labels:
                    raise ValueError(f"--relabel {crop}={label}: {label!r} is not a label of scheme {classifier.labels.name}")
        if getattr(classifier, "warning", None):
            typer.echo(f"warning: {classifier.warning}", err=True)
        if not as_json:
            typer.echo(provider_line(classifier, provider.value), err=True)
    except (BundleError, ValueError, OSError, RuntimeError) as exc:  # RuntimeError: ProviderError
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    total = sum(len(cell.paths) for cell in inputs)
    progress = None if as_json else stderr_progress("  classified")
    exit_code = 0
    results: list[dict[str, Any]] = []
    done = 0
    lines: list[tuple[str, bool]] = []  # (text, to stderr): shown once the counter has finished
    case_calls: list[tuple[str, CellCall]] = []  # (patient, cell) for the case summaries
    case_truths: list[tuple[str, CellCall]] = []

    def say(text: str, err: bool = False) -> None:
        lines.append((text, err))

    for number, cell in enumerate(inputs):
        # one cell at a time: the p-arm-up check turns the tensors just made; one cell's are held at a time
        result = karyotyper.read_cell(cell.paths, cell.name)
        if number in relabels and result.call is not None:
            readable = {p.path for p in result.readable}
            for crop in [c for c in relabels[number] if c not in readable]:
                say(f"error: --relabel {crop}: the crop could not be read, so it keeps no label", err=True)
                exit_code = 1
            wanted = {crop: label for crop, label in relabels[number].items() if crop in readable}
            if wanted:
                result = karyotyper.correct(result, wanted)
        done += len(cell.paths)
        if progress is not None:
            progress(done, total)
        entry = result.to_dict()
        for error in entry["errors"]:
            say(f"error: {error['error']}", err=True)
        if entry["errors"]:
            exit_code = 1
        call = result.call
        if call is None:
            say(f"error: {cell.name}: no readable crops", err=True)
            results.append(entry)
            continue
        truth = call_karyotype(cell.truth) if cell.truth is not None else None
        if cell.case is not None:
            case_calls.append((cell.case, CellCall.of(cell.name, call)))
            if truth is not None:
                case_truths.append((cell.case, CellCall.of(cell.name, truth, cell.truth)))
        if truth is not None:
            entry["truth"] = truth.karyotype
        if result.orientation_hint is not None:  # read p arm up, yet many crops read more clearly turned: say so, change nothing
            say(f"warning: {cell.name}: {result.orientation_hint}", err=True)
        if targets:
            try:
                entry["karyogram"] = str(karyotyper.karyogram(result, targets[number]))
            except (OSError, ValueError) as exc:
                say(f"error: karyogram {targets[number]}: {exc}", err=True)
                exit_code = 1
        results.append(entry)
        if not as_json:
            say(cell_line(cell.name, call, truth, len(entry["errors"]), sum(p.turned for p in result.readable),
                          len(result.corrections)))
    constitutional = trisomies.value == CONSTITUTIONAL_TRISOMIES
    summaries = summarize_cases(case_calls, constitutional)
    truths = {t.case: t for t in summarize_cases(case_truths, constitutional)}
    if not as_json:
        lines += [(case_line(summary, truths.get(summary.case)), False) for summary in summaries]
    for text, err in lines:
        typer.echo(text, err=err)
    if as_json:
        ran = classifier.describe()
        header = {key: ran[key] for key in ("provider", "precision", "precision_reason", "cuda_unavailable", "orientation", "warning")}
        document = {"bundle": str(bundle), **header, "trisomies": trisomies.value, "cells": results}
        if summaries:
            document["cases"] = [_case_entry(summary, truths.get(summary.case)) for summary in summaries]
        typer.echo(json.dumps(document, indent=2))
    if exit_code:
        raise typer.Exit(exit_code)


def _case_entry(summary: CaseSummary, truth: CaseSummary | None) -> dict[str, Any]:
    entry = summary.to_dict()
    if truth is not None:
        entry["truth"] = truth.karyotype
    return entry
