"""Compare bundles crop by crop on one labeled set: what a new model puts right and what it breaks.

Two models with the same accuracy can be wrong on different crops, and a lab replacing the model
on its scanner wants to know what the new one breaks, not only its total. A study needs the same
view the other way round: when several trainings of one split differ by a tenth of a point, are
they wrong on the same hard crops (a ceiling no recipe moves) or on different ones (run-to-run
spread that any single comparison sits inside)?

    python benchmarks/compare.py runs/cv11/fold1/heldout runs/cv11/fold1-bundle runs/cv13/fold1-bundle

Every bundle is evaluated through `karyo.runtime.evaluate.evaluate_bundle` (the figures of
`karyo evaluate`) at three stages: the crop classifier alone, with each crop's size in its cell
weighed in (bundles with a size prior), and after cell assembly (crops whose cell is known). Per
bundle and stage: accuracy, errors, and against the first bundle the crops fixed and broken;
across all bundles: the crops wrong under every one, under at least half, under any.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

STAGES = ("image", "size", "assembled")


def stage_predictions(result: Any, precision: str, size_prior: Any) -> dict[str, np.ndarray]:
    """Per stage the predicted class index of every sample row (-1: no label, or the stage does not
    apply to that row: no cell known, or assembly left it out as a fragment)."""
    probs = result.probs[precision]
    out = {"image": probs.argmax(axis=1)}
    readings, rows = result.readings.get(precision), result.cell_rows  # the cells as the evaluation assembled them
    if readings is None:  # no cells known, or a binary scheme, which is never assembled
        return out
    for stage, values in (("size", readings.sized.argmax(axis=1)), ("assembled", readings.assembled(result.labels))):
        if stage == "size" and size_prior is None:
            continue
        full = np.full(len(probs), -1, dtype=np.int64)
        full[rows] = values
        out[stage] = full
    return out


def compare(data: str, bundles: list[str], precision: str = "int8") -> dict[str, Any]:
    """Evaluate each bundle on `data` and line their crops up by path."""
    from karyo.runtime.bundle import load_bundle
    from karyo.runtime.evaluate import evaluate_bundle

    per_bundle: list[dict[str, Any]] = []
    paths: list[str] | None = None
    truth: np.ndarray | None = None
    for path in bundles:
        bundle = load_bundle(path)
        result = evaluate_bundle(bundle, data, precision=precision, provider="cpu")
        order = np.argsort([str(s.path) for s in result.samples], kind="stable")
        these = [str(result.samples[i].path) for i in order]
        names = [result.labels.labels[int(k)] for k in result.y_true[order]]
        if paths is None:
            paths, truth = these, np.array(names)
        elif these != paths or names != truth.tolist():
            raise SystemExit(f"{path}: read a different set of crops or labels than {bundles[0]} (same data and label scheme needed)")
        predictions = stage_predictions(result, precision, bundle.size_prior)
        labels = np.array([*result.labels.labels, "(none)"])  # index -1 reads as "(none)"
        has_cell = np.array([result.samples[i].has_cell for i in order])
        wrong = {stage: labels[p[order]] != truth for stage, p in predictions.items()}
        scope = {stage: has_cell if stage != "image" else np.ones(len(order), bool) for stage in predictions}
        per_bundle.append({"bundle": str(path), "wrong": wrong, "scope": scope})
    return {"data": data, "precision": precision, "crops": len(paths or []), "paths": paths, "bundles": per_bundle}


def summarize(study: dict[str, Any]) -> dict[str, Any]:
    """Per stage: each bundle's accuracy, errors, fixed and broken against the first; the overlap."""
    first = study["bundles"][0]
    out: dict[str, Any] = {"data": study["data"], "precision": study["precision"], "crops": study["crops"], "stages": {}}
    for stage in STAGES:
        having = [b for b in study["bundles"] if stage in b["wrong"]]
        if not having:
            continue
        scope = having[0]["scope"][stage]
        rows = []
        for b in having:
            wrong = b["wrong"][stage][scope]
            row = {"bundle": b["bundle"], "crops": int(scope.sum()), "errors": int(wrong.sum()),
                   "accuracy": float(1 - wrong.mean()) if scope.any() else 0.0}
            if stage in first["wrong"] and b is not first:
                base = first["wrong"][stage][scope]
                row["fixed"], row["broken"] = int((base & ~wrong).sum()), int((~base & wrong).sum())
            rows.append(row)
        count = np.sum([b["wrong"][stage][scope] for b in having], axis=0)
        out["stages"][stage] = {
            "bundles": rows,
            "wrong_under_all": int((count == len(having)).sum()),
            "wrong_under_half_or_more": int((2 * count >= len(having)).sum()),
            "wrong_under_any": int((count > 0).sum()),
        }
    return out


def markdown(summary: dict[str, Any]) -> str:
    lines = [f"{summary['crops']} crops of {summary['data']}, {summary['precision']}; fixed / broken against the first bundle", ""]
    for stage, figures in summary["stages"].items():
        lines += [f"### {stage}", "", "| bundle | crops | accuracy | errors | fixed | broken |", "| --- | --- | --- | --- | --- | --- |"]
        for row in figures["bundles"]:
            lines.append(f"| {row['bundle']} | {row['crops']} | {100 * row['accuracy']:.2f}% | {row['errors']} | "
                         f"{row.get('fixed', '')} | {row.get('broken', '')} |")
        n = len(figures["bundles"])
        lines += ["", f"wrong under all {n}: {figures['wrong_under_all']}; under at least half: "
                  f"{figures['wrong_under_half_or_more']}; under any: {figures['wrong_under_any']}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="labeled folder (with manifest.csv for cells), e.g. a model's heldout/")
    parser.add_argument("bundles", nargs="+", help="bundle folders; the first is the reference for fixed/broken")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--json", type=Path, help="write the summary as JSON here")
    args = parser.parse_args(argv)
    summary = summarize(compare(args.data, args.bundles, args.precision))
    if args.json:
        from karyo.runtime.bundle import atomic_write_text

        atomic_write_text(args.json, json.dumps(summary, indent=2) + "\n")
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
