"""Case-wise k-fold cross-validation through the product's own commands, as a lab would run it.

Each fold is `karyo-export train --folds K --fold N`, `karyo-export convert`, then
`karyo evaluate BUNDLE MODEL/heldout --json`: the figures are those of the INT8 bundle that would
run on the scanner PC, on patients its model never saw, including cell assembly and the exact
karyotype call. Folds already finished under --work are reused, so an interrupted study resumes.

    python benchmarks/crossval.py ../shared/data/pki-dev ../shared/data/pampaj7 --work runs/cv5

writes runs/cv5/crossval.json and crossval.md (per fold, mean and spread). With `--orientation any`
the same fold bundles are evaluated reading each crop either way up (`karyo evaluate --orientation
any`), into foldN-eval-any.json and crossval-any.json / .md beside the p-arm-up figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from karyo.runtime.bundle import atomic_write_text
from karyo.runtime.orientation import DEFAULT_ORIENTATION, ORIENTATIONS

BIN = Path(sys.executable).parent


def run(command: list[str], log: Path) -> float:
    """Run one product command, its output appended to `log`; returns wall seconds, raises on failure."""
    started = time.perf_counter()
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} exited {done.returncode}; see {log}")
    return seconds


def suffix(orientation: str) -> str:
    """File-name suffix of an orientation's results: none for the default, so older studies still resume."""
    return "" if orientation == DEFAULT_ORIENTATION else f"-{orientation}"


def fold_figures(work: Path, data: list[str], folds: int, number: int, seed: int, extra: list[str],
                 orientation: str = DEFAULT_ORIENTATION) -> dict[str, Any]:
    model, bundle = work / f"fold{number}", work / f"fold{number}-bundle"
    result = work / f"fold{number}-eval{suffix(orientation)}.json"
    log = work / f"fold{number}.log"
    timings_file = work / f"fold{number}-timings.json"
    timings: dict[str, float] = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    known = dict(timings)
    if not (model / "report.json").is_file():
        timings["train_s"] = run([str(BIN / "karyo-export"), "train", *data, "--out", str(model), "--folds", str(folds),
                                  "--fold", str(number), "--seed", str(seed), *extra], log)
    if not (bundle / "manifest.json").is_file():
        timings["convert_s"] = run([str(BIN / "karyo-export"), "convert", str(model), "--out", str(bundle)], log)
    if not result.is_file():
        heldout = model / "heldout"
        if not (heldout / "manifest.csv").is_file():  # model folders from before train wrote it
            from karyo.export.data import sample_from_dict
            from karyo.export.train import write_heldout_manifest

            split = json.loads((model / "split.json").read_text())
            write_heldout_manifest([sample_from_dict(s) for s in split["test"]], heldout)
        started = time.perf_counter()
        done = subprocess.run([str(BIN / "karyo"), "evaluate", str(bundle), str(heldout), "--json",
                               "--orientation", orientation], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"karyo evaluate exited {done.returncode}: {done.stderr.strip()[-300:]}")
        timings[f"evaluate{suffix(orientation).replace('-', '_')}_s"] = time.perf_counter() - started
        atomic_write_text(result, done.stdout)
    if timings != known:  # two studies side by side (--only 4 and --only 5) read each other's finished folds
        atomic_write_text(timings_file, json.dumps(timings))
    evaluation = json.loads(result.read_text())
    report = json.loads((model / "report.json").read_text())
    precisions = evaluation["precisions"]
    cells = evaluation.get("cells", {})
    return {
        "fold": number,
        "test_cases": len(json.loads((model / "split.json").read_text())["test_cases"]),
        "crops": evaluation["n"],
        "precision": evaluation["precision"],
        "fp32": precisions["fp32"]["accuracy"],
        "int8": precisions.get("int8", {}).get("accuracy"),
        "int8_agreement": precisions.get("int8", {}).get("agreement_with_fp32"),
        "with_size": cells.get("crop_accuracy_size"),
        "assembled": cells.get("crop_accuracy_assembled"),
        "cells": cells.get("cells"),
        "complete_cells": cells.get("complete_cells"),
        "exact": cells.get("complete_exact_rate"),
        "review": {**cells["review"], "crops": cells["crops"]} if "review" in cells else None,
        "abnormal": [(row["cell"], row["truth"], row["called"]) for row in cells.get("abnormal_cells", [])],
        "errors": [(row["cell"], row["truth"], row["called"]) for row in cells.get("errors", [])],
        # patients: each one's cells put together (ISCN's clone rule, cell counts), exact against truth's
        "patients": [cells["cases"]["exact"], cells["cases"]["with_karyotype"]] if "cases" in cells else None,
        "epochs_run": len(report["history"]["loss"]),
        # what was asked, where the model folder records it: a time budget or early stopping runs fewer
        "epochs_asked": (report["history"].get("time_budget") or {}).get("asked_epochs"),
        "train_seconds": report.get("seconds"),
        **{k: round(v, 1) for k, v in timings.items()},
    }


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} +- {100 * sd:.2f}"


def flagged(review: dict[str, Any] | None) -> str:
    if not review:
        return "-"
    return f"{100 * review['flagged_rate']:.1f}% ({review['wrong_flagged']} of {review['wrong_assembled']})"


def sum_reviews(reviews: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The folds' review flags pooled: every held-out crop counts once."""
    if not reviews:
        return None
    total = {k: sum(v.get(k, 0) for v in reviews)
             for k in ("flagged", "wrong_assembled", "wrong_flagged", "alternative_right", "crops")}
    return {**total, "flagged_rate": total["flagged"] / total["crops"] if total["crops"] else 0.0}


def epochs_trained(row: dict[str, Any]) -> str:
    """"17 of 24" when a fold trained fewer epochs than asked, else the epochs it trained."""
    run, asked = row.get("epochs_run"), row.get("epochs_asked")
    return f"{run} of {asked}" if asked and run != asked else str(run)


def markdown(rows: list[dict[str, Any]], folds: int) -> str:
    head = ("| fold | test cases | crops | FP32 | INT8 | INT8 + size in cell | INT8 after assembly | "
            "flagged for review (wrong among them) | flagged put right | "
            "exact karyotype (complete cells) | abnormal cells right | patients exact | train min (epochs) |")
    lines = [head, "| " + " | ".join(["---"] * 13) + " |"]
    patients = lambda pair: "-" if not pair else f"{pair[0]}/{pair[1]}"  # noqa: E731
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    for r in rows:
        right = sum(t == c for _, t, c in r["abnormal"])
        lines.append(
            f"| {r['fold']} | {r['test_cases']} | {r['crops']} | {pct(r['fp32'])} | {pct(r['int8'])} | {pct(r['with_size'])} | {pct(r['assembled'])} | "
            f"{flagged(r.get('review'))} | {pct((r.get('review') or {}).get('crop_accuracy_after_review'))} | "
            f"{pct(r['exact'])} of {r['complete_cells']} | {right}/{len(r['abnormal'])} | {patients(r.get('patients'))} | "
            f"{(r['train_seconds'] or 0) / 60:.1f} "
            f"({epochs_trained(r)}) |"
        )
    pick = lambda key: [r[key] for r in rows if r.get(key) is not None]  # noqa: E731
    right = sum(t == c for r in rows for _, t, c in r["abnormal"])
    total = sum(len(r["abnormal"]) for r in rows)
    reviews = [r["review"] for r in rows if r.get("review")]
    pooled = sum_reviews(reviews)
    counted = [r["patients"] for r in rows if r.get("patients")]
    pooled_patients = [sum(p[0] for p in counted), sum(p[1] for p in counted)] if counted else None
    lines.append(
        f"| mean +- sd ({len(rows)} of {folds}) | | {sum(r['crops'] for r in rows)} | {spread(pick('fp32'))} | {spread(pick('int8'))} | "
        f"{spread(pick('with_size'))} | {spread(pick('assembled'))} | {flagged(pooled)} | "
        f"{spread([v['crop_accuracy_after_review'] for v in reviews])} | {spread(pick('exact'))} | {right}/{total} | "
        f"{patients(pooled_patients)} | |"
    )
    if pooled and pooled["wrong_flagged"] and all("alternative_right" in v for v in reviews):
        lines.append(f"\nOf the {pooled['wrong_flagged']} wrong crops flagged, the label shown with the flag "
                     f"(`alternative`) is the true one for {pooled['alternative_right']}.")
    reassembled = [v for v in reviews if "crop_accuracy_reassembled" in v]
    if reassembled and len(reassembled) == len(reviews):
        exact = sum(v["complete_exact_reassembled"] for v in reassembled)
        complete = sum(r["complete_cells"] for r in rows if r.get("review"))
        lines.append(f"\nWith the flagged crops put right and each cell assembled again around them (`karyo karyotype "
                     f"--relabel`): {spread([v['crop_accuracy_reassembled'] for v in reassembled])}% of crops right, "
                     f"{exact} of {complete} complete cells exact.")
        if all("crop_accuracy_rechecked" in v for v in reassembled):
            lines.append(f"With what the corrected cells flag anew checked too, until nothing new is flagged "
                         f"({sum(v['flagged_again'] for v in reassembled)} crops more): "
                         f"{spread([v['crop_accuracy_rechecked'] for v in reassembled])}% of crops right, "
                         f"{sum(v['complete_exact_rechecked'] for v in reassembled)} of {complete} complete cells exact.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", help="labeled folders, as for karyo-export train")
    parser.add_argument("--work", type=Path, required=True, help="folder for the fold models, bundles and reports")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated fold numbers to run now (default: all)")
    parser.add_argument("--train-args", default="", help="extra karyo-export train options, e.g. '--epochs 40'")
    parser.add_argument("--orientation", choices=ORIENTATIONS, default=DEFAULT_ORIENTATION,
                        help="karyo evaluate --orientation: 'any' reads each held-out crop either way up")
    args = parser.parse_args(argv)
    if shutil.which("karyo-export", path=str(BIN)) is None:
        raise SystemExit(f"karyo-export not found beside {sys.executable}: install karyo with the export extra")
    args.work.mkdir(parents=True, exist_ok=True)
    chosen = [int(n) for n in args.only.split(",") if n.strip()] or list(range(1, args.folds + 1))
    rows = []
    for number in range(1, args.folds + 1):
        done = (args.work / f"fold{number}-eval{suffix(args.orientation)}.json").is_file()
        if number in chosen or done:
            print(f"fold {number}/{args.folds}{' (done before)' if done else ''}", file=sys.stderr, flush=True)
            rows.append(fold_figures(args.work, args.data, args.folds, number, args.seed, args.train_args.split(),
                                     args.orientation))
            r = rows[-1]
            print(f"  INT8 {r['int8']:.4f}, assembled {r['assembled']:.4f}, exact {r['exact']:.4f}", file=sys.stderr, flush=True)
    summary = {"data": args.data, "folds": args.folds, "seed": args.seed, "orientation": args.orientation, "rows": rows}
    name = f"crossval{suffix(args.orientation)}"
    atomic_write_text(args.work / f"{name}.json", json.dumps(summary, indent=2) + "\n")
    table = markdown(rows, args.folds)
    atomic_write_text(args.work / f"{name}.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
