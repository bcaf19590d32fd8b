"""Reading a labeled set cell by cell, as `karyo karyotype` reads one cell, and measuring it against
the labels: what `karyo evaluate`, `karyo audit` and `benchmarks/compare.py` stand on.

Kept apart from ``karyo.runtime.karyotype`` (one cell's call), since this side also knows the truth:
crop accuracy before and after assembly, the exact-call rate, what the review flags catch, and
each patient's karyotype against the one its labels give.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from .case_summary import CellCall, compare_cases
from .cell_size import SizePrior
from .dataset import UNKNOWN, Sample
from .karyotype import AssemblyPriors, KaryotypeCall, call_cell, call_karyotype, pin_crops, size_evidence
from .labels import LabelScheme


@dataclass
class CellReadings:
    """A labeled set's crops read cell by cell as `karyo karyotype` reads them, row for row with the
    samples: kept apart from the metrics so a study can compare two models crop by crop (which crops
    a new model puts right, which it breaks), not only by their totals."""

    sized: np.ndarray  # probabilities with each crop's size in its cell weighed in (as given without)
    fragments: np.ndarray  # rows too small for a whole chromosome (no label after assembly)
    cells: dict[str, list[int]]  # cell key -> its rows, in sample order
    calls: dict[str, KaryotypeCall]  # cell key -> its call; assignments in the order of its rows
    relative: np.ndarray | None = None  # each crop's size relative to its cell (N x 2), when sizes were given

    def assembled(self, labels: LabelScheme) -> np.ndarray:
        """Per row the class index assembly gave it, -1 for a fragment (it got no chromosome)."""
        out = np.full(len(self.sized), -1, dtype=np.int64)
        for key, rows in self.cells.items():
            for row, a in zip(rows, self.calls[key].assignments):
                out[row] = -1 if a.fragment else labels.index(a.label)
        return out


def read_cells(
    samples: list[Sample],
    probs: np.ndarray,
    labels: LabelScheme,
    priors: AssemblyPriors | None = None,
    max_losses: int = 1,
    sizes: np.ndarray | None = None,
    size_prior: SizePrior | None = None,
) -> CellReadings:
    """Weigh in each crop's size relative to its cell, then assemble and call every cell (grouped by
    `Sample.cell_key`)."""
    probs = np.asarray(probs)
    if probs.shape != (len(samples), len(labels)):
        raise ValueError(f"probabilities must be {len(samples)} x {len(labels)}, got {probs.shape}")
    sized, fragments, relative = size_evidence(probs, sizes, [s.cell_key for s in samples], size_prior)
    if fragments is None:
        fragments = np.zeros(len(samples), dtype=bool)
    by_cell: dict[str, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        by_cell[sample.cell_key].append(index)
    calls = {key: call_cell(sized[rows], labels, priors, fragments[rows], max_losses=max_losses,
                            relative=None if relative is None else relative[rows], size_prior=size_prior)
             for key, rows in by_cell.items()}
    return CellReadings(sized, fragments, dict(by_cell), calls, relative)


def _reviewed(readings: CellReadings, key: str, truth: list[str], labels: LabelScheme, priors: AssemblyPriors | None,
              max_losses: int, size_prior: SizePrior | None) -> tuple[KaryotypeCall, KaryotypeCall, int]:
    """A cell's call once a reviewer has set every flagged crop to its true label and the cell is
    assembled again around them (``Karyotyper.correct``); then once they have also set right what
    each corrected call flags anew, until nothing new is flagged; and how many crops those later
    looks took. The call itself where nothing is flagged."""
    called, rows = readings.calls[key], readings.cells[key]
    relative = None if readings.relative is None else readings.relative[rows]
    pins: dict[int, str] = {}
    first, call, again = None, called, 0
    while True:
        new = {j: t for j, (a, t) in enumerate(zip(call.assignments, truth)) if a.review and j not in pins and t in labels}
        if not new:  # each look pins at least one more crop, so this ends
            return first or called, call, again
        again += len(new) if first is not None else 0
        pins.update(new)
        probs, fragments = pin_crops(readings.sized[rows], readings.fragments[rows], labels, pins)
        call = call_cell(probs, labels, priors, fragments, max_losses=max_losses, relative=relative, size_prior=size_prior)
        first = first or call


def _right(truth: list[str], call: KaryotypeCall) -> int:
    """Crops placed as their true label (a fragment is placed as none)."""
    return sum(t == (None if a.fragment else a.label) for t, a in zip(truth, call.assignments))


def evaluate_cells(
    samples: list[Sample],
    probs: np.ndarray,
    labels: LabelScheme,
    priors: AssemblyPriors | None = None,
    max_losses: int = 1,
    sizes: np.ndarray | None = None,
    size_prior: SizePrior | None = None,
    constitutional: bool = True,
    readings: CellReadings | None = None,
) -> dict[str, Any]:
    """Cell-level quality: crop accuracy before/after assembly and exact karyotype calls per cell.

    `crop_accuracy_top1` is the crop classifier alone; with `sizes` and a `size_prior`,
    `crop_accuracy_size` is top-1 after each crop's size relative to its cell is weighed in, and
    assembly and the calls start from those probabilities. With `sizes`, crops too small for a
    whole chromosome are left out of the calls and listed in `fragments`; in
    `crop_accuracy_assembled` they count as wrong (they got no chromosome).

    `review` measures the flags a reviewer is shown: how many crops are flagged, how many of the
    crops assembly still gets wrong are among them, for how many of those the label shown beside
    the flag (`alternative`) is the true one (`alternative_right`: the reviewer only has to
    confirm the hint), and `crop_accuracy_after_review`, the accuracy once a reviewer has put every
    flagged crop right (what a lab gets for checking the red boxes). `crop_accuracy_reassembled`
    and `complete_exact_reassembled` go one step further, as `karyo karyotype --relabel` does: the
    flagged crops pinned to their true labels and each cell assembled again around them, so an
    unflagged crop that only sat wrong for the counts' sake moves too; the corrected calls may flag
    crops anew (what moved), and `flagged_again`, `crop_accuracy_rechecked` and
    `complete_exact_rechecked` are for a reviewer who looks at those too, round after round, until
    nothing new is flagged. `calls_wrong_flagged` counts
    the cells called wrong (`calls_wrong`) in which at least one wrong crop is flagged: a wrong
    call that comes with a box on what makes it wrong, rather than a silent one.

    Truth is the karyotype string the same caller builds from the true labels; "complete" counts
    the cells whose truth is complete, and `complete_exact_rate` is the share of those called
    exactly right. `errors` lists every cell whose call differs from its truth.

    `cases` puts each patient's cells together as a lab reports them (``karyo.runtime.case_summary``:
    one ISCN karyotype with cell counts, the clone rule, ``mos`` for a constitutional mosaic when
    `constitutional`) and compares the called with the true one; cells of an unknown case take no part.

    `readings`: these samples already read with these arguments (`read_cells`), when the caller
    keeps them for a later look at the same crops (`karyo evaluate --errors`).
    """
    if readings is None:
        readings = read_cells(samples, probs, labels, priors, max_losses, sizes, size_prior)
    probs, sized, by_cell = np.asarray(probs), readings.sized, readings.cells
    with_size = sizes is not None and size_prior is not None
    right_top1 = right_size = right_assembled = complete = complete_exact = agree_complete = 0
    flagged = wrong_flagged = alternative_right = calls_wrong_flagged = right_reassembled = exact_reassembled = 0
    flagged_again = right_rechecked = exact_rechecked = 0
    errors: list[dict[str, Any]] = []
    abnormal: list[dict[str, Any]] = []  # every cell whose truth is not 46,XX / 46,XY, right or wrong
    not_counted: list[dict[str, Any]] = []  # crops set aside as too small for a whole chromosome
    case_cells: list[tuple[str, CellCall, CellCall]] = []  # (case, true cell, called cell) for the case summaries
    for key, rows in by_cell.items():
        truth_labels = [samples[i].label for i in rows]
        truth = call_karyotype(truth_labels, max_losses=max_losses)
        called = readings.calls[key]
        top1 = [labels.labels[int(i)] for i in probs[rows].argmax(axis=1)]
        right_size += sum(t == labels.labels[int(i)] for t, i in zip(truth_labels, sized[rows].argmax(axis=1)))
        assembled = [None if a.fragment else a.label for a in called.assignments]  # a fragment has no label
        not_counted += [{"cell": key, "path": str(samples[i].path), "truth": samples[i].label}
                        for i, a in zip(rows, called.assignments) if a.fragment]
        wrong_top1 = sum(t != p for t, p in zip(truth_labels, top1))
        wrong = [t != p for t, p in zip(truth_labels, assembled)]
        wrong_assembled = sum(wrong)
        cell_call = CellCall.of(key, called)
        flagged += cell_call.review
        cell_wrong_flagged = sum(a.review and w for a, w in zip(called.assignments, wrong))
        wrong_flagged += cell_wrong_flagged
        alternative_right += sum(a.review and w and a.alternative == t
                                 for a, t, w in zip(called.assignments, truth_labels, wrong))
        right_top1 += len(rows) - wrong_top1
        right_assembled += len(rows) - wrong_assembled
        agree_complete += truth.complete == called.complete
        if samples[rows[0]].case != UNKNOWN:
            case_cells.append((samples[rows[0]].case, CellCall.of(key, truth, truth_labels), cell_call))
        reviewed, rechecked, again = _reviewed(readings, key, truth_labels, labels, priors, max_losses, size_prior)
        right_reassembled += _right(truth_labels, reviewed)
        right_rechecked += _right(truth_labels, rechecked)
        flagged_again += again
        if truth.complete:
            complete += 1
            complete_exact += truth.karyotype == called.karyotype
            exact_reassembled += truth.karyotype == reviewed.karyotype
            exact_rechecked += truth.karyotype == rechecked.karyotype
        if truth.karyotype not in ("46,XX", "46,XY"):
            abnormal.append({"cell": key, "truth": truth.karyotype, "called": called.karyotype,
                             "right": truth.karyotype == called.karyotype})
        if truth.karyotype != called.karyotype:
            calls_wrong_flagged += cell_wrong_flagged > 0
            errors.append({"cell": key, "truth": truth.karyotype, "called": called.karyotype, "crops": len(rows),
                           "wrong_top1": wrong_top1, "wrong_assembled": wrong_assembled,
                           "wrong_flagged": cell_wrong_flagged})
    n = len(samples)
    return {
        "cells": len(by_cell),
        "crops": n,
        "crop_accuracy_top1": right_top1 / n if n else 0.0,
        **({"crop_accuracy_size": right_size / n if n else 0.0} if with_size else {}),
        "crop_accuracy_assembled": right_assembled / n if n else 0.0,
        "review": {
            "flagged": flagged,
            "flagged_rate": flagged / n if n else 0.0,
            "wrong_assembled": n - right_assembled,
            "wrong_flagged": wrong_flagged,
            "alternative_right": alternative_right,
            "crop_accuracy_after_review": (right_assembled + wrong_flagged) / n if n else 0.0,
            "crop_accuracy_reassembled": right_reassembled / n if n else 0.0,
            "complete_exact_reassembled": exact_reassembled,
            "flagged_again": flagged_again,
            "crop_accuracy_rechecked": right_rechecked / n if n else 0.0,
            "complete_exact_rechecked": exact_rechecked,
            "calls_wrong": len(errors),
            "calls_wrong_flagged": calls_wrong_flagged,
        },
        "complete_cells": complete,
        "complete_exact": complete_exact,
        "complete_exact_rate": complete_exact / complete if complete else 0.0,
        "completeness_agreement": agree_complete / len(by_cell) if by_cell else 0.0,
        "abnormal_cells": sorted(abnormal, key=lambda row: row["cell"]),
        "fragments": not_counted,
        "errors": errors,
        **({"cases": compare_cases(case_cells, constitutional)} if case_cells else {}),
    }


__all__ = ["CellReadings", "evaluate_cells", "read_cells"]
