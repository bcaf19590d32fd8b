"""`karyo audit`: which labels of a lab's own labeled cells the model disputes, strongest first."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import numpy as np
import typer

from .audit import DEFAULT_MIN_ODDS, Finding, LabelAudit
from .cli_common import (
    EXIT_OK, EXIT_SOME_FAILED, ORIENTATION_HELP, OrientationChoice, ProviderChoice, fail, orientation_value,
    stderr_progress, user_errors,
)

if TYPE_CHECKING:
    from .evaluate import EvaluationResult
    from .preprocess import PreprocessSpec

CSV_COLUMNS = ("finding", "kind", "cell", "path", "label", "suggested", "evidence", "odds", "turned", "note")
AUDIT_LEGEND = ('red box: labelled as placed, but the model reads it as the chromosome written under it ("18?")',)


class AuditPrecision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


def audit_csv(findings: list[Finding]) -> str:
    """One row per disputed crop, numbered by finding (rank 1: the strongest), for a spreadsheet."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for rank, finding in enumerate(findings, start=1):
        note = finding.describe()
        for crop in finding.crops:
            writer.writerow([rank, finding.kind, finding.cell, crop.path, crop.label, crop.suggested,
                             f"{crop.evidence:.3f}", f"{crop.to_dict()['odds']:.3g}", "yes" if crop.turned else "", note])
    return out.getvalue()


def format_audit(audit: LabelAudit, seen: set[str] | None, most: int) -> list[str]:
    counts = audit.counts()
    lines = [
        f"audited {audit.crops} crops ({audit.cells} cells read jointly); {audit.disputed} read otherwise than labelled",
        f"findings at {audit.min_odds:g}:1 or more: {counts['shift']} shift, {counts['exchange']} exchange, "
        f"{counts['single']} single ({sum(len(f.crops) for f in audit.findings)} crops)",
    ]
    if seen is None:
        lines.append("this bundle does not record its training cases: audit only cases it never trained on")
    for rank, finding in enumerate(audit.findings[:most], start=1):
        mark = " (trained on)" if seen and finding.case in seen else ""
        lines.append(f"{rank:>4}. {finding.cell or '-'}{mark}  {finding.kind}  odds {finding.to_dict()['odds']:.3g}:1  "
                     f"{finding.describe()}")
    if len(audit.findings) > most:
        lines.append(f"      ... {len(audit.findings) - most} more (--csv, --json, --most)")
    return lines


def _training_warning(seen: set[str] | None, cases: int) -> str | None:
    if not seen:
        return None
    return (f"{len(seen)} of the {cases} cases here were in this bundle's training data: the model learned their labels, "
            f"so it disputes few of them; audit them with a model trained without them (karyo-export train --folds K --fold N)")


def _file_name(rank: int, cell: str) -> str:
    return f"{rank:03d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', cell)}.png"


def write_audit_karyograms(result: EvaluationResult, audit: LabelAudit, spec: PreprocessSpec, folder: Path) -> list[Path]:
    """Each cell with a finding drawn as it was labelled, the disputed crops boxed in red with what
    the model reads them as: a slipped row or an exchange is seen at a glance, and judged by eye.
    A crop read turned half a circle (`--orientation any`) is drawn turned, p arm up like the rest."""
    from .assembly import CropAssignment
    from .karyogram import draw_karyogram
    from .karyotype import call_karyotype
    from .preprocess import ImageError, crop_as_read

    labels = result.labels
    disputed = {c.path: c for f in audit.findings for c in f.crops}
    rows_of: dict[str, list[int]] = {}
    for row, sample in enumerate(result.samples):
        if sample.has_cell:
            rows_of.setdefault(sample.cell_key, []).append(row)
    probs = result.probs[result.primary]
    turned = result.turned.get(result.primary)
    written: list[Path] = []
    cells = list(dict.fromkeys(f.cell for f in audit.findings if f.cell))
    for rank, cell in enumerate(cells, start=1):
        crops, assignments = [], []
        for row in rows_of.get(cell, []):
            sample = result.samples[row]
            try:
                crops.append(crop_as_read(sample.path, spec, turned is not None and bool(turned[row])))
            except ImageError:  # changed since it was read: the picture goes without it
                continue
            given, top = labels.index(sample.label), int(np.argmax(probs[row]))
            dispute = disputed.get(str(sample.path))
            assignments.append(CropAssignment(
                len(assignments), sample.label, float(probs[row, given]), labels.labels[top], float(probs[row, top]),
                review=dispute is not None, path=str(sample.path),
                alternative=None if dispute is None else dispute.suggested))
        if not crops:
            continue
        title = f"{cell} as labelled: {call_karyotype([a.label for a in assignments]).karyotype}"
        written.append(draw_karyogram(crops, assignments, folder / _file_name(rank, cell), title, legend=AUDIT_LEGEND))
    return written


@user_errors
def audit(
    bundle: Path = typer.Argument(..., metavar="BUNDLE", help="Bundle folder (with manifest.json)."),
    data: List[Path] = typer.Argument(..., metavar="DATA...", help="Labeled folders (class sub-folders or manifest.csv; case and cell from the manifest)."),
    min_odds: float = typer.Option(DEFAULT_MIN_ODDS, "--min-odds", min=1.0, help="List a finding when the model favours its reading by at least these odds (1: every dispute)."),
    precision: AuditPrecision = typer.Option(AuditPrecision.fp32, "--precision", help="The model that reads the crops (fp32: the network itself, no quantization error)."),
    provider: ProviderChoice = typer.Option(ProviderChoice.cpu, "--provider"),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads per inference (default: KARYO_THREADS, else all cores)."),
    orientation: Optional[OrientationChoice] = typer.Option(None, "--orientation", help=ORIENTATION_HELP),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write one row per disputed crop to this CSV."),
    karyograms: Optional[Path] = typer.Option(None, "--karyograms", help="Draw each cell with a finding, as labelled, into this folder."),
    most: int = typer.Option(20, "--most", min=0, help="Findings to print (all are in --csv and --json)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Crops whose label the model disputes, grouped (a slipped karyogram row, an exchanged pair, a single crop) and
    ranked by odds. Audit cases the model never trained on. Exit 1 if some crops were unreadable."""
    from .audit import audit_labels
    from .bundle import atomic_write_text, load_bundle
    from .evaluate import evaluate_bundle

    loaded = load_bundle(bundle)
    result = evaluate_bundle(loaded, data, precision=precision.value, provider=provider.value, threads=threads,
                             progress=stderr_progress("reading"), orientation=orientation_value(orientation))
    if not result.samples:
        raise fail(f"{', '.join(map(str, data))}: no readable crops with labels of this bundle ({result.labels.name})")
    for _, message in result.unreadable:
        typer.echo(f"error: {message}", err=True)
    if result.extra.get("int8_overflow"):
        typer.echo(f"warning: {result.extra['int8_overflow']}", err=True)
    report = audit_labels(result.samples, result.probs[result.primary], result.labels, result.sizes,
                          loaded.size_prior, min_odds=min_odds, turned=result.turned.get(result.primary))
    cases = {s.case for s in result.samples}
    seen = loaded.seen_in_training(cases)
    if warning := _training_warning(seen, len(cases)):
        typer.echo(f"warning: {warning}", err=True)
    if csv_path is not None:
        atomic_write_text(csv_path, audit_csv(report.findings))
    drawn = write_audit_karyograms(result, report, loaded.spec, karyograms) if karyograms is not None else []
    if as_json:
        document = {"bundle": str(bundle), "precision": result.primary, "provider": result.provider,
                    "orientation": result.extra["orientation"], **report.to_dict(),
                    "cases": len(cases), "cases_seen_in_training": None if seen is None else len(seen),
                    "unreadable": [{"path": p, "error": e} for p, e in result.unreadable]}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        typer.echo(f"bundle: {bundle}  precision: {result.primary}  provider: {result.provider}  "
                   f"orientation: {result.extra['orientation']}")
        for line in format_audit(report, seen, most):
            typer.echo(line)
        if csv_path is not None:
            typer.echo(f"csv: {csv_path}")
        if karyograms is not None:
            typer.echo(f"karyograms: {len(drawn)} cells drawn in {karyograms}")
    raise typer.Exit(EXIT_SOME_FAILED if result.unreadable else EXIT_OK)
