"""A patient's karyotype from its cells: ISCN cell lines, the clone rule, mosaics, and what the notes say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from karyo.runtime.case_summary import (
    CellCall, case_line, cells_for_clone, compare_cases, copies_of, is_loss_only, summarize_case, summarize_cases,
)
from karyo.runtime.dataset import UNKNOWN, Sample
from karyo.runtime.cell_evaluation import evaluate_cells
from karyo.runtime.labels import AUTOSOMES, NORMAL24, scheme

AUTOSOME_PAIRS = [c for c in AUTOSOMES for _ in range(2)]
MALE = AUTOSOME_PAIRS + ["X", "Y"]
FEMALE = AUTOSOME_PAIRS + ["X", "X"]


def cells(*groups: tuple[str, int], complete: bool = True) -> list[CellCall]:
    """(karyotype, how many cells) groups as cell calls named c1, c2, ... in order."""
    out: list[CellCall] = []
    for karyotype, n in groups:
        out += [CellCall(f"c{len(out) + k + 1}", karyotype, complete) for k in range(n)]
    return out


@pytest.mark.parametrize("karyotype, loss_only", [
    ("45,X", True), ("45,XY,-8", True), ("44,XX,-3,-16", True),
    ("47,XXY", False), ("47,XY,+21", False), ("46,XY,+21,-16", False), ("46,X,i(X)(q10)", False),
    ("46,XY,del(5)(p14)", False), ("46,XY", False), ("46,XX", False),
])
def test_loss_only_lines_need_three_cells_any_other_change_two(karyotype, loss_only):
    assert is_loss_only(karyotype) is loss_only
    assert cells_for_clone(karyotype) == (3 if loss_only else 2)


def test_a_constitutional_mosaic_lists_the_abnormal_line_first_and_the_normal_line_last():
    summary = summarize_case("P1", cells(("46,XY", 10), ("47,XY,+21", 3), ("46,XY", 7)))
    assert summary.karyotype == "mos 47,XY,+21[3]/46,XY[17]"
    assert summary.counted == 20 and summary.nonclonal == [] and summary.notes == []
    assert [line.cells for line in summary.lines][0] == ["c11", "c12", "c13"]
    marrow = summarize_case("P1", cells(("46,XY", 17), ("47,XY,+8", 3)), constitutional=False)
    assert marrow.karyotype == "47,XY,+8[3]/46,XY[17]"  # no `mos` outside constitutional work


def test_several_abnormal_lines_stand_by_cell_count():
    summary = summarize_case("P2", cells(("46,XX", 12), ("47,XXX", 3), ("45,X", 5)))
    assert summary.karyotype == "mos 45,X[5]/47,XXX[3]/46,XX[12]"


def test_one_cell_with_a_gain_is_not_a_cell_line_but_asks_for_more_cells():
    summary = summarize_case("P3", cells(("46,XY", 19), ("47,XY,+13", 1)))
    assert summary.karyotype == "46,XY[19]"
    assert [(line.karyotype, line.count, line.clonal) for line in summary.nonclonal] == [("47,XY,+13", 1, False)]
    assert summary.notes == ["47,XY,+13 in 1 cell: below the 2 cells of a cell line; count more cells to rule out mosaicism"]
    two = summarize_case("P3", cells(("46,XY", 18), ("47,XY,+13", 2)))
    assert two.karyotype == "mos 47,XY,+13[2]/46,XY[18]"


def test_a_loss_needs_three_cells():
    two = summarize_case("P4", cells(("46,XX", 18), ("45,X", 2)))
    assert two.karyotype == "46,XX[18]"
    assert two.notes == ["45,X in 2 cells: a loss needs 3 cells to be a cell line; likely lost in spreading"]
    three = summarize_case("P4", cells(("46,XX", 17), ("45,X", 3)))
    assert three.karyotype == "mos 45,X[3]/46,XX[17]" and three.nonclonal == []


def test_with_no_clone_the_line_with_most_cells_stands_and_says_on_how_few():
    single = summarize_case("P5", cells(("45,XY,-8", 1)))
    assert single.karyotype == "45,XY,-8[1]"
    assert single.notes == ["45,XY,-8 rests on 1 cell, below the 3 of a cell line",
                            "fewer cells than the 20 of a routine count"]
    trisomy = summarize_case("P6", cells(("47,XY,+18", 1)))
    assert trisomy.karyotype == "47,XY,+18[1]" and trisomy.notes[0] == "47,XY,+18 rests on 1 cell, below the 2 of a cell line"
    tied = summarize_case("P7", cells(("45,XY,-12", 1), ("45,XY,-3", 1)))
    assert tied.karyotype is None and tied.lines == [] and len(tied.nonclonal) == 2
    assert tied.notes[0] == "no line has more cells than every other"


def test_a_lone_loss_does_not_stand_when_other_cells_hold_two_of_what_it_lost():
    """One complete cell missing a 21 beside incomplete cells with two 21s: lost in spreading, so no
    karyotype rather than 45,XY,-21[1]; with the other cells one 21 short too, the loss stands."""
    male = copies_of(MALE)
    lone = CellCall("a", "45,XY,-21", True, copies={**male, "21": 1})
    two = CellCall("b", "43,XY,inc", False, copies={**male, "3": 1, "7": 1, "21": 2})
    summary = summarize_case("P11", [lone, two])
    assert summary.karyotype is None and [line.karyotype for line in summary.nonclonal] == ["45,XY,-21"]
    assert summary.notes[0] == "45,XY,-21 in 1 cell, while other cells hold two 21s: likely lost in spreading"
    assert not any("a loss needs" in note for note in summary.notes)  # said once
    short = CellCall("b", "43,XY,inc", False, copies={**male, "3": 1, "7": 1, "21": 1})
    assert summarize_case("P11", [lone, short]).karyotype == "45,XY,-21[1]"
    unknown = CellCall("b", "43,XY,inc", False)  # copies not given: nothing to weigh
    assert summarize_case("P11", [lone, unknown]).karyotype == "45,XY,-21[1]"
    turner = CellCall("a", "45,X", True, copies={**male, "Y": 0})
    xx = CellCall("b", "44,XX,inc", False, copies={**copies_of(FEMALE), "3": 1})
    assert summarize_case("P12", [turner, xx]).notes[0] == ("45,X in 1 cell, while other cells hold two sex "
                                                            "chromosomes: likely lost in spreading")


def test_copies_count_variants_as_their_chromosome_and_skip_unplaced_crops():
    assert copies_of(["1", "1", "del(5)(p14)", "5", None, "X"]) == {"1": 2, "5": 2, "X": 1}


def test_cells_of_both_sexes_are_named_and_a_tie_gives_no_karyotype():
    mostly = summarize_case("P8", cells(("46,XX", 5), ("46,XY", 1)))
    assert mostly.karyotype == "46,XX[5]" and [line.karyotype for line in mostly.nonclonal] == ["46,XY"]
    assert any("both 46,XX and 46,XY" in note for note in mostly.notes)
    two = summarize_case("P8", cells(("46,XX", 10), ("46,XY", 2), ("47,XXY", 2)))
    assert two.karyotype == "chi 46,XX[10]/46,XY[2]/47,XXY[2]"  # most cells first, first seen among equals
    assert summarize_case("P8", cells(("46,XY", 3), ("46,XX", 3))).karyotype == "chi 46,XY[3]/46,XX[3]"
    tied = summarize_case("P8", cells(("46,XX", 1), ("46,XY", 1)))
    assert tied.karyotype is None and any("both 46,XX and 46,XY" in note for note in tied.notes)


def test_incomplete_cells_are_not_counted_and_cells_to_review_are():
    summary = summarize_case("P9", cells(("46,XY", 2)) + cells(("42,XY,inc", 3), complete=False)
                             + [CellCall("r", "46,XY", True, review=2)])
    assert summary.karyotype == "46,XY[3]" and summary.counted == 3 and summary.review_cells == 1
    assert summary.incomplete == ["c1", "c2", "c3"]
    assert "3 incomplete cells not counted" in summary.notes
    gains = summarize_case("P9", cells(("47,XY,+21", 2)) + cells(("43,XY,+21,inc", 2), ("41,XXY,inc", 1), complete=False))
    assert gains.notes[-1] == "3 incomplete cells not counted (+21 in 2, XXY in 1 of them)"
    line = case_line(summary)
    assert line.startswith("case P9: 46,XY[3]  (3 cells counted, 1 with crops to review)  ")
    none = summarize_case("P10", cells(("41,XX,inc", 2), complete=False))
    assert none.karyotype is None and none.counted == 0 and case_line(none).startswith("case P10: no karyotype  (0 cells counted)")


def test_cases_are_summarized_apart_in_order_and_compared_with_their_counts():
    truth = [("A", CellCall("A/1", "47,XY,+21", True)), ("B", CellCall("B/1", "46,XX", True)),
             ("A", CellCall("A/2", "47,XY,+21", True)), ("B", CellCall("B/2", "47,XX,+13", True))]
    called = [("A", CellCall("A/1", "47,XY,+21", True)), ("B", CellCall("B/1", "46,XX", True)),
              ("A", CellCall("A/2", "47,XY,+21", True)), ("B", CellCall("B/2", "46,XX", True))]
    assert [(s.case, s.karyotype) for s in summarize_cases(truth)] == [("A", "47,XY,+21[2]"), ("B", "46,XX[1]")]
    result = compare_cases([(case, t, c) for (case, t), (_, c) in zip(truth, called)])
    assert (result["cases"], result["with_karyotype"], result["exact"]) == (2, 2, 1)
    # B's normal line is right, but its count is not: the +13 cell a lab would count further is gone
    assert result["errors"] == [{"case": "B", "truth": "46,XX[1]", "called": "46,XX[2]", "cells": ["B/1", "B/2"]}]
    assert result["abnormal"] == [{"case": "A", "truth": "47,XY,+21[2]", "called": "47,XY,+21[2]", "right": True}]
    assert "MISMATCH" in case_line(summarize_cases([(c, x) for c, x in called])[1], summarize_cases(truth)[1])


def test_evaluate_cells_puts_each_patients_cells_together():
    """Two cells of one patient with trisomy 21 and a third patient cell read from confident crops;
    cells of an unknown case stay out of the patients' figures."""
    layout = [("A", "1", MALE + ["21"]), ("A", "2", MALE + ["21"]), ("B", "1", FEMALE), (UNKNOWN, "9", FEMALE)]
    samples, rows = [], []
    for case, cell, labels in layout:
        samples += [Sample(Path(f"{case}/{cell}/{i}.png"), label, case, cell) for i, label in enumerate(labels)]
        rows += [NORMAL24.index(label) for label in labels]
    probs = np.full((len(rows), 24), 0.001 / 23)
    probs[np.arange(len(rows)), rows] = 0.999
    result = evaluate_cells(samples, probs, scheme("normal24"))
    cases = result["cases"]
    assert (cases["cases"], cases["with_karyotype"], cases["exact"], cases["exact_rate"]) == (2, 2, 2, 1.0)
    assert cases["abnormal"] == [{"case": "A", "truth": "47,XY,+21[2]", "called": "47,XY,+21[2]", "right": True}]
