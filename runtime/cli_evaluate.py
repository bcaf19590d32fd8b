"""`karyo evaluate`: re-measure a bundle's accuracy and FP16/INT8 drift on a labeled folder."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer

from .cli_common import (
    DEFAULT_TRISOMY_CHOICE, EXIT_OK, EXIT_SOME_FAILED, ORIENTATION_HELP, TRISOMIES_HELP, OrientationChoice, ProviderChoice,
    TrisomyChoice, fail, orientation_value, short_float, stderr_progress, user_errors,
)


class EvalPrecision(str, Enum):
    all = "all"
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


def format_report(result: Any) -> str:
    """Per-precision summary (with the manifest's stored figures beside ours), then per-class recall."""
    data = result.to_dict()
    lines = [
        f"bundle: {data['bundle']}  provider: {data['provider']}  crops: {data['n']}  orientation: {data['orientation']}",
        "",
        f"{'precision':<10}{'accuracy':>10}{'agree_fp32':>12}{'decisive':>10}{'kl_to_fp32':>12}{'max_diff':>10}   manifest accuracy / agreement",
    ]
    for name, figures in data["precisions"].items():
        stored = figures.get("manifest", {})
        lines.append(
            f"{name:<10}{short_float(figures['accuracy']):>10}{short_float(figures.get('agreement_with_fp32')):>12}"
            f"{short_float(figures.get('decisive_agreement')):>10}{short_float(figures.get('kl_to_fp32'), 5):>12}{short_float(figures.get('max_prob_diff')):>10}   "
            f"{short_float(stored.get('accuracy'))} / {short_float(stored.get('agreement_with_fp32'))}"
        )
    if "cells" in data:
        c = data["cells"]
        lines += [
            "",
            f"cells ({data['precision']}, assembled for {data['trisomies']} trisomies): {c['cells']}; "
            f"crop accuracy {short_float(c['crop_accuracy_top1'])} top-1 -> "
            + (f"{short_float(c['crop_accuracy_size'])} with size in the cell -> " if "crop_accuracy_size" in c else "")
            + f"{short_float(c['crop_accuracy_assembled'])} after assembly; exact karyotype "
            f"{c['complete_exact']}/{c['complete_cells']} complete cells ({short_float(c['complete_exact_rate'])})",
        ]
        review = c.get("review")
        if review:
            lines.append(
                f"flagged for review: {review['flagged']} crops ({100 * review['flagged_rate']:.1f}%), holding "
                f"{review['wrong_flagged']} of the {review['wrong_assembled']} wrong after assembly (the label "
                f"shown with the flag is the true one for {review['alternative_right']}); with those put "
                f"right {short_float(review['crop_accuracy_after_review'])}, and each cell assembled again around "
                f"them (as --relabel does) {short_float(review['crop_accuracy_reassembled'])}, exact karyotype "
                f"{review['complete_exact_reassembled']}/{c['complete_cells']}"
            )
            if review.get("flagged_again"):
                lines.append(f"flagged anew once corrected: {review['flagged_again']} crops; with those checked too, "
                             f"until nothing new is flagged, {short_float(review['crop_accuracy_rechecked'])}, exact "
                             f"karyotype {review['complete_exact_rechecked']}/{c['complete_cells']}")
            if review.get("calls_wrong"):
                lines.append(f"cells called wrong: {review['calls_wrong']}, of them {review['calls_wrong_flagged']} "
                             "with a wrong crop flagged")
        hints = data.get("orientation_hints") or {}
        if hints:
            key, hint = next(iter(hints.items()))
            lines.append(f"orientation: {len(hints)} of {c['cells']} cells seem not to stand p arm up (e.g. {key}: {hint})")
        for error in c["errors"][:10]:
            flags = error.get("wrong_flagged")
            note = "" if flags is None else f" ({flags} of its {error['wrong_assembled']} wrong crops flagged)"
            lines.append(f"  {error['cell']}: called {error['called']}, truth {error['truth']}{note}")
        if len(c["errors"]) > 10:
            lines.append(f"  ... {len(c['errors']) - 10} more in --json")
        abnormal = c.get("abnormal_cells", [])
        if abnormal:
            right = sum(row["right"] for row in abnormal)
            lines.append(f"cells whose truth is not 46,XX/46,XY: {right}/{len(abnormal)} called exactly")
        cases = c.get("cases")
        if cases and not cases["with_karyotype"]:
            lines.append(f"patients: {cases['cases']}, none with a complete cell in truth to count")
        elif cases:
            abnormal_cases = cases["abnormal"]
            lines.append(
                f"patients (cells put together, clone rule): {cases['exact']}/{cases['with_karyotype']} karyotypes "
                f"exact with their cell counts ({short_float(cases['exact_rate'])}); not 46,XX/46,XY: "
                f"{sum(row['right'] for row in abnormal_cases)}/{len(abnormal_cases)}"
                + (f"; {cases['cases'] - cases['with_karyotype']} with no karyotype in truth"
                   if cases["cases"] > cases["with_karyotype"] else "")
            )
            for error in cases["errors"][:5]:
                lines.append(f"  case {error['case']}: called {error['called'] or 'no karyotype'}, truth {error['truth']}")
        for fragment in c.get("fragments", []):
            lines.append(f"not counted (too small for a whole chromosome): {fragment['path']} (labelled {fragment['truth']})")
    lines += ["", f"per-class recall ({data['precision']}):"]
    cells = [
        f"{label:>15} {short_float(v['recall'], 3):>6} (n={v['support']})"
        for label, v in data["per_class"].items()
        if v["support"]
    ]
    for start in range(0, len(cells), 3):
        lines.append("  ".join(cells[start : start + 3]))
    skipped = data["skipped"]["labels_not_in_scheme"]
    if skipped:
        text = ", ".join(f"{label}: {count}" for label, count in skipped.items())
        lines += ["", f"skipped (labels not in this bundle's scheme): {sum(skipped.values())} ({text})"]
    if data["skipped"]["unreadable"]:
        lines.append(f"unreadable crops: {len(data['skipped']['unreadable'])} (listed on stderr)")
    return "\n".join(lines)


@user_errors
def evaluate(
    bundle: Path = typer.Argument(..., metavar="BUNDLE", help="Bundle folder (with manifest.json)."),
    data: Path = typer.Argument(..., metavar="DATA", help="Labeled folder: class sub-folders (1..22, X, Y, chr_01, clase1, ...) or manifest.csv."),
    precision: EvalPrecision = typer.Option(EvalPrecision.all, "--precision", help="all precisions in the bundle, or one."),
    provider: ProviderChoice = typer.Option(ProviderChoice.cpu, "--provider", help="cpu reproduces the manifest's figures."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads per inference (default: KARYO_THREADS, else all cores)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    confusion: Optional[Path] = typer.Option(None, "--confusion", help="Also draw the confusion matrix to this PNG."),
    errors: Optional[Path] = typer.Option(None, "--errors", help="Also draw the crops called wrong to this PNG, by true "
                                          "and called label (after assembly where cells are known); a CSV beside it lists them."),
    orientation: Optional[OrientationChoice] = typer.Option(None, "--orientation", help=ORIENTATION_HELP),
    trisomies: TrisomyChoice = typer.Option(DEFAULT_TRISOMY_CHOICE, "--trisomies", help=TRISOMIES_HELP + " (Cell figures only.)"),
) -> None:
    """Accuracy per precision, agreement/KL vs FP32, per-class recall. Exit 1 if some crops were unreadable."""
    from .evaluate import evaluate_bundle

    result = evaluate_bundle(
        bundle, data, precision=precision.value, provider=provider.value, threads=threads,
        progress=stderr_progress("evaluating"), orientation=orientation_value(orientation), trisomies=trisomies.value,
    )
    if not result.samples:
        skipped = sum(result.skipped_labels.values())
        raise fail(f"{data}: no readable crops with labels of this bundle ({result.labels.name}); {skipped} skipped")
    for path, message in result.unreadable:
        typer.echo(f"error: {message}", err=True)
    if seen := result.extra.get("cases_seen_in_training"):
        typer.echo(f"warning: {seen['cases']} of the {seen['of']} cases here ({seen['crops']} crops) were in this bundle's "
                   f"training data: the figures are optimistic; measure on cases it never saw", err=True)
    if result.extra.get("int8_overflow"):
        typer.echo(f"warning: {result.extra['int8_overflow']}", err=True)
    if confusion is not None:
        from .plots import confusion_matrix_png

        report = result.reports[result.primary]
        title = f"{Path(bundle).name} {result.primary}: accuracy {report['accuracy']:.1%} (n={report['n']})"
        confusion_matrix_png(report["confusion_matrix"], report["labels"], confusion, title=title)
    gallery = None
    if errors is not None:
        from .bundle import load_bundle
        from .error_gallery import write_error_gallery

        gallery = write_error_gallery(result, load_bundle(bundle), errors)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        typer.echo(format_report(result))
        if confusion is not None:
            typer.echo(f"confusion matrix: {confusion}")
    if gallery is not None:
        picture, listing, wrong, drawn = gallery
        typer.echo(f"crops called wrong: {len(wrong)}, {drawn} drawn in {picture}, all listed in {listing}",
                   err=as_json)
    raise typer.Exit(EXIT_SOME_FAILED if result.unreadable else EXIT_OK)
