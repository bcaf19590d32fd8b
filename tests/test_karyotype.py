"""Karyotype assembly and call on constructed probability matrices with known answers."""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from karyo.runtime.assignment import AssignmentError, solve_assignment
from karyo.runtime.dataset import Sample
from karyo.runtime.cell_evaluation import evaluate_cells, read_cells
from karyo.runtime.karyotype import (
    AssemblyPriors,
    assemble_cell,
    call_karyotype,
    karyotype_cell,
)
from karyo.runtime.labels import AUTOSOMES, NORMAL24, scheme

NORMAL = scheme("normal24")
SEED32 = scheme("seed32")
AUTOSOME_PAIRS = [c for c in AUTOSOMES for _ in range(2)]
MALE = AUTOSOME_PAIRS + ["X", "Y"]
FEMALE = AUTOSOME_PAIRS + ["X", "X"]


def confident(labels: list[str], labelset=NORMAL, p: float = 0.9) -> np.ndarray:
    """Each crop gives its true label p and spreads the rest evenly."""
    probs = np.full((len(labels), len(labelset)), (1.0 - p) / (len(labelset) - 1))
    for row, label in enumerate(labels):
        probs[row, labelset.index(label)] = p
    return probs


def set_probs(probs: np.ndarray, row: int, labelset, **named: float) -> None:
    """Give crop `row` the named probabilities (keys like c21, cX) and spread the rest evenly."""
    wanted = {labelset.index(k[1:]): v for k, v in named.items()}
    rest = (1.0 - sum(wanted.values())) / (len(labelset) - len(wanted))
    probs[row] = rest
    for index, value in wanted.items():
        probs[row, index] = value


@pytest.mark.parametrize(
    "labels, expected, findings",
    [
        (MALE, "46,XY", []),
        (FEMALE, "46,XX", []),
        (MALE + ["21"], "47,XY,+21", ["trisomy 21"]),
        (FEMALE + ["18"], "47,XX,+18", ["trisomy 18"]),
        (AUTOSOME_PAIRS + ["X"], "45,X", ["monosomy X"]),
        (MALE + ["X"], "47,XXY", ["XXY (Klinefelter)"]),
        (MALE + ["Y"], "47,XYY", ["XYY"]),
        (FEMALE + ["X"], "47,XXX", ["trisomy X"]),
        ([c for c in MALE if c != "21"] + ["21"], "45,XY,-21", ["monosomy 21"]),
    ],
)
def test_numerical_calls(labels, expected, findings):
    call = karyotype_cell(confident(labels), NORMAL)
    assert call.karyotype == expected
    assert call.findings == findings
    assert call.complete and call.count == len(labels)
    assert [a.label for a in call.assignments] == labels
    assert not any(a.review for a in call.assignments)
    assert all(a.probability == pytest.approx(0.9) for a in call.assignments)


def test_swapped_pair_is_fixed_only_by_assembly():
    probs = confident(MALE)
    moved = MALE.index("22")
    set_probs(probs, moved, NORMAL, c21=0.6, c22=0.3)  # top-1 says 21, 22 is left with one crop
    top1 = [NORMAL.labels[i] for i in probs.argmax(axis=1)]
    assert call_karyotype(top1).karyotype == "46,XY,+21,-22"
    call = karyotype_cell(probs, NORMAL)
    assert call.karyotype == "46,XY"
    crop = call.assignments[moved]
    assert (crop.label, crop.top_label, crop.review) == ("22", "21", True)
    assert crop.probability == pytest.approx(0.3)
    assert sum(a.review for a in call.assignments) == 1


def test_assembly_keeps_a_confident_trisomy():
    probs = confident(MALE + ["21"], p=0.99)
    # the extra 21 has a little 22 mass, but the 22 pair is complete: nothing to fill
    set_probs(probs, len(MALE), NORMAL, c21=0.9, c22=0.09)
    assert karyotype_cell(probs, NORMAL).karyotype == "47,XY,+21"


def test_sex_chromosomes_are_called_jointly():
    # a cell with X, X, Y where one X looks a little like 7: the joint XXY explanation must beat
    # 46,XY plus a stray trisomy 7 only when the X evidence is strong enough
    labels = MALE + ["X"]
    probs = confident(labels)
    set_probs(probs, len(MALE), NORMAL, cX=0.5, c7=0.45)
    assert karyotype_cell(probs, NORMAL).karyotype == "47,XXY"
    set_probs(probs, len(MALE), NORMAL, cX=0.002, c7=0.99)
    assert karyotype_cell(probs, NORMAL).karyotype == "47,XY,+7"


def test_incomplete_cell_is_not_a_set_of_monosomies():
    dropped = ["1", "4", "7", "9", "13", "16", "20"]
    labels = list(MALE)
    for label in dropped:
        labels.remove(label)
    call = karyotype_cell(confident(labels), NORMAL)
    assert call.karyotype == "39,XY,inc"
    assert not call.complete
    assert call.findings == ["incomplete cell: 39 of 46 crops"]
    assert [a.label for a in call.assignments] == labels  # no crop moved to fill a gap


def test_incomplete_cell_keeps_gains_and_flags_uncertain_sex():
    labels = [c for c in MALE if c not in ("3", "Y")] + ["21"]  # 44 crops: -3,-3,-Y,+21
    # a 21 crop is moved into the empty 3 pair only if its 3-probability is above ~e^-7 of its
    # 21-probability (trisomy 4 + loss 3 nats): at p=0.9 with 0.4 % spread on each other class
    # that happens, at p=0.99 it must not
    assert karyotype_cell(confident(labels, p=0.9), NORMAL).karyotype == "44,X,inc"
    call = karyotype_cell(confident(labels, p=0.99), NORMAL)
    assert call.karyotype == "44,X,+21,inc"
    assert "trisomy 21" in call.findings
    assert any("sex chromosomes uncertain" in f for f in call.findings)
    assert not any("monosomy" in f for f in call.findings)


def test_max_losses_decides_completeness():
    labels = [c for c in FEMALE if c != "20"] + ["20"]
    assert call_karyotype(labels).karyotype == "45,XX,-20"
    assert call_karyotype(labels, max_losses=0).karyotype == "45,XX,inc"


def test_structural_variant_counts_as_a_copy_of_its_parent():
    labels = list(FEMALE)
    labels[labels.index("5")] = "del(5)(p14)"
    probs = confident(labels, SEED32)
    call = karyotype_cell(probs, SEED32)
    assert call.karyotype == "46,XX,del(5)(p14)"
    assert call.findings == ["structural: del(5)(p14)"]
    assert call.complete


def test_structural_assembly_and_ordering():
    labels = list(FEMALE) + ["21"]
    labels[labels.index("X")] = "i(X)(q10)"
    labels[labels.index("18")] = "i(18)(q10)"
    probs = confident(labels, SEED32)
    # the isochromosome 18 crop is ambiguous between 18 and i(18): either way it is an 18 copy,
    # so it must neither be moved elsewhere nor turn into a trisomy
    set_probs(probs, labels.index("i(18)(q10)"), SEED32, **{"ci(18)(q10)": 0.45, "c18": 0.40, "c17": 0.1})
    call = karyotype_cell(probs, SEED32)
    assert call.karyotype == "47,X,i(X)(q10),i(18)(q10),+21"
    assert call.assignments[labels.index("i(18)(q10)")].review  # close call inside the pair


def test_extra_structural_copy_is_a_gain():
    labels = MALE + ["i(18)(q10)"]
    assert call_karyotype(labels).karyotype == "47,XY,+i(18)(q10)"
    assert "trisomy 18" in call_karyotype(labels).findings


def test_review_margin_is_configurable():
    probs = confident(FEMALE)
    set_probs(probs, 0, NORMAL, c1=0.5, c2=0.35)
    close = karyotype_cell(probs, NORMAL).assignments[0]
    assert close.review and close.alternative == "2"  # margin 0.15 < 0.2; the runner-up to weigh
    relaxed = karyotype_cell(probs, NORMAL, AssemblyPriors(review_margin=0.1))
    assert not relaxed.assignments[0].review and relaxed.assignments[0].alternative is None
    assert relaxed.assignments[0].label == "1"


def test_an_overridden_crop_offers_the_networks_own_label_as_the_alternative():
    probs = confident(FEMALE)
    second_two = [i for i, label in enumerate(FEMALE) if label == "2"][1]
    set_probs(probs, second_two, NORMAL, c1=0.6, c2=0.38)  # top-1 would make three 1s and one 2
    call = karyotype_cell(probs, NORMAL)
    assert call.karyotype == "46,XX"
    moved = call.assignments[second_two]
    assert (moved.label, moved.top_label, moved.review, moved.alternative) == ("2", "1", True, "1")
    assert [a.index for a in call.assignments if a.alternative is not None] == [second_two]


def near_swap(p_wrong: float) -> tuple[np.ndarray, int, int]:
    """A male cell whose first 4 and first 5 each look like the other with p_wrong (the rest on the truth)."""
    probs = confident(MALE)
    four, five = MALE.index("4"), MALE.index("5")
    set_probs(probs, four, NORMAL, c5=p_wrong, c4=0.98 - p_wrong)
    set_probs(probs, five, NORMAL, c4=p_wrong, c5=0.98 - p_wrong)
    return probs, four, five


def test_two_crops_that_may_be_swapped_are_flagged_as_a_pair():
    probs, four, five = near_swap(0.7)  # each leads by 0.42: the margin rule sees nothing
    call = karyotype_cell(probs, NORMAL)
    assert call.karyotype == "46,XY"  # the counts are right either way
    a, b = call.assignments[four], call.assignments[five]
    assert (a.label, b.label) == ("5", "4")  # the images say so; only a person can overrule
    # exchanging them costs 2 ln(0.7 / 0.28) = 1.83 nats, a 1-in-6.3 alternative: within 10:1
    assert a.review and b.review and (a.swap_with, b.swap_with) == (five, four)
    assert (a.alternative, b.alternative) == ("4", "5")  # each the other's label: what to check
    assert sum(x.review for x in call.assignments) == 2
    assert all(x.swap_with is None for i, x in enumerate(call.assignments) if i not in (four, five))
    off = karyotype_cell(probs, NORMAL, AssemblyPriors(review_swap_odds=1.0))
    assert not any(x.review for x in off.assignments)
    strict = karyotype_cell(probs, NORMAL, AssemblyPriors(review_swap_odds=6.0))  # 6.25:1 is outside 6:1
    assert not any(x.review for x in strict.assignments)


def test_a_possible_swap_offers_the_partners_label_not_the_runner_up():
    probs = confident(MALE)
    four, five = MALE.index("4"), MALE.index("5")
    set_probs(probs, four, NORMAL, c5=0.5, c6=0.26, c4=0.22)  # runner-up 6, leads by 0.24
    set_probs(probs, five, NORMAL, c4=0.7, c5=0.28)
    call = karyotype_cell(probs, NORMAL)
    a = call.assignments[four]
    # the exchange costs ln(0.5 / 0.22) + ln(0.7 / 0.28) = 1.74 nats: within 10:1, so flagged
    assert (a.label, a.swap_with, a.alternative) == ("5", five, "4")
    assert call.assignments[five].alternative == "5"


def test_json_names_the_swap_partner_by_its_path():
    from karyo.runtime.karyotyper import assignment_rows

    probs, four, five = near_swap(0.7)
    rows = assignment_rows(karyotype_cell(probs, NORMAL, paths=[f"/cell/{i}.png" for i in range(46)]))
    assert rows[four]["swap_with"] == f"/cell/{five}.png" and rows[five]["swap_with"] == f"/cell/{four}.png"
    assert rows[four]["review"] and sum(r["swap_with"] is not None for r in rows) == 2
    assert (rows[four]["alternative"], rows[five]["alternative"]) == ("4", "5")
    assert sum(r["alternative"] is not None for r in rows) == 2


def test_plain_output_names_the_pair_that_may_be_swapped():
    from karyo.runtime.cli_karyotype import possible_swaps

    probs, four, five = near_swap(0.7)
    assert possible_swaps(karyotype_cell(probs, NORMAL)) == ["5 <-> 4"]  # the first 4 was read as 5
    assert possible_swaps(karyotype_cell(confident(MALE), NORMAL)) == []


def test_plain_output_names_what_to_check_each_other_flagged_crop_against():
    from karyo.runtime.cli_karyotype import cell_line, other_checks, possible_swaps

    probs = confident(FEMALE)
    second_two = [i for i, label in enumerate(FEMALE) if label == "2"][1]
    set_probs(probs, second_two, NORMAL, c1=0.6, c2=0.38)  # overridden: placed as 2, read as 1
    seven = FEMALE.index("7")
    set_probs(probs, seven, NORMAL, c7=0.5, c6=0.4)  # a close call: 7, or 6?
    call = karyotype_cell(probs, NORMAL)
    assert other_checks(call) == ["2 (1?)", "7 (6?)"]  # in crop order
    assert possible_swaps(call) == []
    line = cell_line("cell1", call)
    assert line == "cell1: 46,XX  (46 crops, 2 to review)  check: 2 (1?), 7 (6?)"
    swapped, four, five = near_swap(0.7)  # swaps are named as pairs, not again as checks
    assert other_checks(karyotype_cell(swapped, NORMAL)) == []
    assert other_checks(karyotype_cell(confident(MALE), NORMAL)) == []


def test_a_confident_pair_is_not_flagged_as_a_possible_swap():
    probs, four, five = near_swap(0.85)  # 2 ln(0.85 / 0.13) = 3.76 nats, 1 in 43
    call = karyotype_cell(probs, NORMAL)
    assert not any(x.review for x in call.assignments)
    with pytest.raises(ValueError, match="review_swap_odds"):
        AssemblyPriors(review_swap_odds=0.5)


def test_a_third_x_sized_chromosome_leans_to_xxx_unless_the_lab_sees_any_trisomy():
    """A 47,XXX cell whose third X reads 0.81 as a 9 and 0.15 as an X: the crop's evidence for 9
    is ln(0.81/0.15) = 1.69 nats. Under the default priors a trisomy 9 (not viable) costs 8.0 and
    47,XXX 6.0 against 46,XX's 0.7, a 2.7-nat lead for XXX: called 47,XXX, the crop flagged with 9
    to check (the other call is 1 in e^1.01). A lab that sees any trisomy prices +9 at 6.0, a lead
    of 0.7: 47,XX,+9. A crop that plainly is a third 8 is called +8 either way."""
    from karyo.runtime.cli_karyotype import other_checks
    from karyo.runtime.karyotype import TRISOMY_COSTS

    labels = FEMALE + ["X"]
    probs = confident(labels)
    third_x = len(labels) - 1
    set_probs(probs, third_x, NORMAL, c9=0.81, cX=0.15)
    call = karyotype_cell(probs, NORMAL)
    assert (call.karyotype, call.findings) == ("47,XXX", ["trisomy X"])
    assert [(a.index, a.label, a.alternative) for a in call.assignments if a.review] == [(third_x, "X", "9")]
    assert other_checks(call) == ["X (9?)"]
    anything = AssemblyPriors.for_trisomies("any")
    assert (AssemblyPriors().trisomy("9"), anything.trisomy("9"), anything.trisomy("21")) == (8.0, 6.0, 4.0)
    assert TRISOMY_COSTS == {"viable": 8.0, "any": 6.0}
    assert karyotype_cell(probs, NORMAL, anything).karyotype == "47,XX,+9"
    plus_8 = confident(FEMALE + ["8"])  # 0.9 for 8, the rest spread: any other label costs 5.3 nats
    for priors in (AssemblyPriors(), anything):
        assert karyotype_cell(plus_8, NORMAL, priors).karyotype == "47,XX,+8"
    with pytest.raises(ValueError, match="trisomies 'some': use one of viable, any"):
        AssemblyPriors.for_trisomies("some")


def test_a_call_that_hangs_on_one_crop_names_that_crop_and_the_karyotype_it_would_make():
    """A 47,XXX cell whose third X reads 0.95 as a 9 and 0.04 as an X is called 47,XX,+9: the
    crop's evidence (ln 0.95/0.04 = 3.17 nats) outweighs the priors' preference for XXX over a
    trisomy 9 (2.7 nats). No exchange and no close runner-up flags it, yet labelling that one crop
    X is a 1-in-1.6 alternative call, so it is flagged with X to check against; at 0.997 for 9 and
    0.002 for X (3.5 nats, 1 in 33) it is not, nor with the rule off."""
    from karyo.runtime.cli_karyotype import other_checks

    labels = FEMALE + ["X"]
    probs = confident(labels, p=0.99)  # the two other 9s too sure to be read as 13s for a viable trisomy
    third_x = len(labels) - 1
    set_probs(probs, third_x, NORMAL, c9=0.95, cX=0.04)
    call = karyotype_cell(probs, NORMAL)
    assert call.karyotype == "47,XX,+9"
    flagged = [a for a in call.assignments if a.review]
    assert [(a.index, a.label, a.alternative, a.swap_with) for a in flagged] == [(third_x, "9", "X", None)]
    assert other_checks(call) == ["9 (X?)"]
    assert not any(a.review for a in karyotype_cell(probs, NORMAL, AssemblyPriors(review_recount_odds=1.0)).assignments)
    set_probs(probs, third_x, NORMAL, c9=0.997, cX=0.002)
    assert not any(a.review for a in karyotype_cell(probs, NORMAL).assignments)
    with pytest.raises(ValueError, match="review_recount_odds"):
        AssemblyPriors(review_recount_odds=0.5)


def test_evaluate_cells_says_which_wrong_calls_come_with_a_flag_on_what_makes_them_wrong():
    """The 47,XXX cell called 47,XX,+9 (the test above): a wrong call, but the recount rule boxes
    the crop that makes it wrong, so it is not a silent one; with the rule off it is."""
    labels = FEMALE + ["X"]
    probs = confident(labels, p=0.99)
    set_probs(probs, len(labels) - 1, NORMAL, c9=0.95, cX=0.04)
    samples = [Sample(Path(f"A/1/{i}.png"), label, "A", "1") for i, label in enumerate(labels)]
    result = evaluate_cells(samples, probs, NORMAL)
    assert [(e["truth"], e["called"], e["wrong_assembled"], e["wrong_flagged"]) for e in result["errors"]] == [
        ("47,XXX", "47,XX,+9", 1, 1)]
    assert (result["review"]["calls_wrong"], result["review"]["calls_wrong_flagged"]) == (1, 1)
    off = evaluate_cells(samples, probs, NORMAL, AssemblyPriors(review_recount_odds=1.0))
    assert (off["review"]["calls_wrong"], off["review"]["calls_wrong_flagged"]) == (1, 0)


def test_swap_partner_indexes_the_cell_when_a_fragment_is_left_out():
    probs, four, five = near_swap(0.7)
    probs = np.vstack([probs[:1], confident(["21"]), probs[1:]])  # a speck at row 1 shifts the rest
    sizes = np.array([[100.0, 600.0]] * len(probs))
    sizes[1] = [8.0, 20.0]
    call = karyotype_cell(probs, NORMAL, sizes=sizes)
    assert call.assignments[1].fragment
    assert (call.assignments[four + 1].swap_with, call.assignments[five + 1].swap_with) == (five + 1, four + 1)


def test_binary_scheme_is_refused():
    labels = scheme("binary:del(5)(p14)")
    with pytest.raises(ValueError, match="all 24 chromosomes"):
        assemble_cell(np.full((3, 2), 0.5), labels)


# --- exactness ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_solver_matches_brute_force_6_by_3_classes(seed):
    """6 crops x 3 classes with 2 slots each (distinct slot costs): every permutation checked."""
    rng = np.random.default_rng(seed)
    crop_cost = -np.log(rng.dirichlet(np.ones(3), size=6))
    slot_cost = np.array([0.0, 0.5, -1.0, 2.0, 1.0, 1.5])  # class k owns columns 2k, 2k+1
    cost = crop_cost[:, np.repeat(np.arange(3), 2)] + slot_cost
    if seed % 2:
        cost = np.round(cost)  # ties
    columns = solve_assignment(cost)
    assert sorted(columns.tolist()) == list(range(6))
    best = min(sum(cost[i, p[i]] for i in range(6)) for p in itertools.permutations(range(6)))
    assert cost[np.arange(6), columns].sum() == pytest.approx(best, abs=1e-9)


@pytest.mark.parametrize("seed", range(20))
def test_warm_start_gives_the_same_optimum(seed):
    from karyo.runtime.assignment import solve_assignment_state

    rng = np.random.default_rng(seed)
    cost = rng.normal(size=(5, 8))
    first = solve_assignment_state(cost)
    if seed % 2:  # some columns dearer by the same amount for every row: the intended use
        changed = cost + np.where(rng.random(8) < 0.4, rng.uniform(0, 3, 8), 0.0)[None, :]
    else:  # an arbitrary change: must fall back and still be exact
        changed = cost + rng.normal(size=cost.shape)
    warm = solve_assignment_state(changed, warm=first).col4row
    best = min(sum(changed[i, p[i]] for i in range(5)) for p in itertools.permutations(range(8), 5))
    assert sorted(set(warm.tolist())) == sorted(warm.tolist())
    assert changed[np.arange(5), warm].sum() == pytest.approx(best, abs=1e-9)


def test_solver_rectangular_and_errors():
    cost = np.array([[4.0, 1.0, 3.0, 2.0], [2.0, 0.0, 5.0, 3.0]])
    assert solve_assignment(cost).tolist() == [3, 1]
    with pytest.raises(AssignmentError):
        solve_assignment(np.zeros((3, 2)))
    with pytest.raises(AssignmentError):
        solve_assignment(np.array([[np.nan]]))


def _counts(labels_idx: np.ndarray) -> np.ndarray:
    counts = np.zeros((len(labels_idx), 24), dtype=np.int64)
    for column in labels_idx.T:
        counts[np.arange(len(labels_idx)), column] += 1
    return counts


@functools.lru_cache(maxsize=1)
def _all_labelings(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every labeling of n crops over 24 classes, and its count-prior total (default priors)."""
    labelings = np.indices((24,) * n).reshape(n, -1).T
    return labelings, _prior_total(_counts(labelings), AssemblyPriors())


def _reference_total(labels_idx: np.ndarray, probs: np.ndarray, priors: AssemblyPriors,
                     prior_total: np.ndarray | None = None) -> np.ndarray:
    """The objective written out from the documented priors, for many labelings at once."""
    rows = np.arange(probs.shape[0])
    crop = -np.log(np.clip(probs, priors.prob_floor, 1.0))[rows, labels_idx].sum(axis=1)
    return crop + (_prior_total(_counts(labels_idx), priors) if prior_total is None else prior_total)


def _prior_total(counts: np.ndarray, priors: AssemblyPriors) -> np.ndarray:
    """Count priors per labeling (rows of per-chromosome counts), straight from the documented model."""

    def autosome_prior(k: np.ndarray, trisomy: float) -> np.ndarray:
        extra = np.maximum(k - 2, 0)  # copies beyond two: trisomy + E*(j-1) for the j-th of them
        return np.where(k < 2, (2 - k) * priors.loss_cost,
                        extra * trisomy + priors.extra_copy_cost * extra * (extra - 1) / 2)

    total = np.zeros(len(counts))
    for g, chromosome in enumerate(AUTOSOMES):
        total += autosome_prior(counts[:, g], priors.trisomy(chromosome))

    def extras(n: np.ndarray) -> np.ndarray:  # n copies above the complement: E, E+2, E+4 ...
        n = np.maximum(n, 0)
        return n * priors.sex_extra_cost + n * (n - 1)

    sex = np.full(len(counts), np.inf)
    for complement, prior in priors.sex_costs.items():
        hx, hy = complement.count("X"), complement.count("Y")
        nx, ny = counts[:, 22], counts[:, 23]
        option = (prior + priors.loss_cost * (np.maximum(hx - nx, 0) + np.maximum(hy - ny, 0))
                  + extras(nx - hx) + extras(ny - hy))
        sex = np.minimum(sex, option)
    return total + sex


def _cell_probs(seed: int, n: int) -> np.ndarray:
    """n crops whose probability sits on a few classes, the sex chromosomes among them."""
    rng = np.random.default_rng(seed)
    size = 2 if n <= 3 else 4  # fewer classes than crops can hold as pairs: crops must compete
    focus = rng.choice(22, size=size, replace=False)
    focus[:2] = [22, 23] if seed % 2 else [22, focus[1]]  # make the sex chromosomes compete
    probs = np.full((n, 24), 1e-3)
    probs[:, focus] += rng.dirichlet(np.ones(size) * 0.7, size=n)
    return probs / probs.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed", range(4))
def test_assembly_is_the_exact_optimum_exhaustive(seed):
    """3 crops over all 24 classes: every one of the 13,824 labelings scored with the written-out objective."""
    probs = _cell_probs(seed, 3)
    labelings, prior_total = _all_labelings(3)
    priors = AssemblyPriors()
    scores = _reference_total(labelings, probs, priors, prior_total)
    assembly = assemble_cell(probs, NORMAL, priors)
    chosen = np.array([[NORMAL.index(a.label) for a in assembly.assignments]])
    assert assembly.cost == pytest.approx(scores.min(), abs=1e-6)
    assert _reference_total(chosen, probs, priors)[0] == pytest.approx(scores.min(), abs=1e-6)


def _subset_dp_optimum(probs: np.ndarray, priors: AssemblyPriors) -> float:
    """Exact optimum by dynamic programming over which crops each chromosome takes (no assignment solver)."""
    n = probs.shape[0]
    full = (1 << n) - 1
    crop_cost = -np.log(np.clip(probs, priors.prob_floor, 1.0))
    masks = np.arange(1 << n)
    members = (masks[:, None] >> np.arange(n)) & 1  # subset -> which crops
    subset_cost = members @ crop_cost  # (2^n, 24): summed crop cost of a subset per chromosome
    sizes = members.sum(axis=1)
    best = {0: 0.0}
    for g, chromosome in enumerate(AUTOSOMES):
        extra = np.maximum(sizes - 2, 0)
        trisomy = priors.trisomy(chromosome)
        prior = np.where(sizes < 2, (2 - sizes) * priors.loss_cost,
                         extra * trisomy + priors.extra_copy_cost * extra * (extra - 1) / 2)
        nxt: dict[int, float] = {}
        for mask, value in best.items():
            rest = full & ~mask
            sub = rest
            while True:
                total = value + subset_cost[sub, g] + prior[sub]
                if total < nxt.get(mask | sub, math.inf):
                    nxt[mask | sub] = total
                if sub == 0:
                    break
                sub = (sub - 1) & rest
        best = nxt
    grid = np.array([(x, y) for x in range(n + 1) for y in range(n + 1)])
    counts = np.zeros((len(grid), 24), dtype=np.int64)
    counts[:, :22] = 2  # autosome term zero: only the sex term is left
    counts[:, 22:] = grid
    sex_table = _prior_total(counts, priors).reshape(n + 1, n + 1)
    result = math.inf
    for mask, value in best.items():
        rest = full & ~mask
        sub = rest
        while True:
            x, y = sub, rest ^ sub
            result = min(result, value + subset_cost[x, 22] + subset_cost[y, 23] + sex_table[sizes[x], sizes[y]])
            if sub == 0:
                break
            sub = (sub - 1) & rest
    return result


@pytest.mark.parametrize("seed", range(4))
def test_assembly_is_the_exact_optimum_subset_dp(seed):
    """6 crops over all 24 classes, checked against an independent exact dynamic program."""
    probs = _cell_probs(seed, 6)
    priors = AssemblyPriors()
    assert assemble_cell(probs, NORMAL, priors).cost == pytest.approx(_subset_dp_optimum(probs, priors), abs=1e-6)


def test_full_cell_matches_reference_objective_against_local_moves():
    """On a full noisy 47-crop cell, no single relabeling or swap beats the assembled labeling."""
    rng = np.random.default_rng(7)
    truth = np.array([NORMAL.index(c) for c in MALE + ["21"]])
    probs = rng.dirichlet(np.ones(24) * 0.3, size=len(truth))
    probs[np.arange(len(truth)), truth] += rng.uniform(0.1, 1.0, size=len(truth))
    probs /= probs.sum(axis=1, keepdims=True)
    assembly = assemble_cell(probs, NORMAL)
    chosen = np.array([NORMAL.index(a.label) for a in assembly.assignments])
    moves = [chosen.copy()]
    for i in range(len(chosen)):
        for c in range(24):
            moved = chosen.copy()
            moved[i] = c
            moves.append(moved)
    scores = _reference_total(np.array(moves), probs, AssemblyPriors())
    assert scores[0] == pytest.approx(assembly.cost, abs=1e-6)
    assert scores.min() >= scores[0] - 1e-9


# --- evaluation --------------------------------------------------------------------------------


def test_evaluate_cells_counts_crops_and_exact_calls():
    cells = {"A/1": MALE, "A/2": FEMALE + ["21"], "B/1": [c for c in FEMALE if c not in ("1", "2", "3")]}
    samples, blocks = [], []
    for key, labels in cells.items():
        case, cell = key.split("/")
        samples += [Sample(Path(f"{key}/{i}.png"), label, case, cell) for i, label in enumerate(labels)]
        blocks.append(confident(labels, p=0.999))
    probs = np.concatenate(blocks)
    swap = MALE.index("22")  # cell A/1: one 22 looks like 21, fixable
    set_probs(probs, swap, NORMAL, c21=0.6, c22=0.3)
    result = evaluate_cells(samples, probs, NORMAL)
    n = len(samples)
    assert result["cells"] == 3 and result["crops"] == n
    assert result["crop_accuracy_top1"] == pytest.approx((n - 1) / n)
    assert result["crop_accuracy_assembled"] == pytest.approx(1.0)
    assert result["complete_cells"] == 2  # B/1 misses six copies: incomplete in truth too
    assert result["complete_exact"] == 2 and result["complete_exact_rate"] == 1.0
    assert result["errors"] == []
    # the one crop assembly moved is flagged, and it was right
    assert result["review"] == {"flagged": 1, "flagged_rate": pytest.approx(1 / n), "wrong_assembled": 0,
                                "wrong_flagged": 0, "alternative_right": 0, "crop_accuracy_after_review": 1.0,
                                "crop_accuracy_reassembled": 1.0, "complete_exact_reassembled": 2,
                                "flagged_again": 0, "crop_accuracy_rechecked": 1.0, "complete_exact_rechecked": 2,
                                "calls_wrong": 0, "calls_wrong_flagged": 0}
    # now a cell the assembly cannot fix: a confident wrong label (a 1 read as 21 with p 0.999; moving
    # a true 21 into the 1's slot would cost 10 nats, a loss and a viable trisomy only 7)
    set_probs(probs, 0, NORMAL, c21=0.999, c1=1e-6)
    result = evaluate_cells(samples, probs, NORMAL)
    assert result["complete_exact"] == 1
    assert result["errors"][0]["cell"] == "A/1"
    assert result["errors"][0]["truth"] == "46,XY"
    assert result["errors"][0]["called"] == "46,XY,-1,+21"
    assert result["review"]["wrong_assembled"] == 1 and result["review"]["wrong_flagged"] == 0  # too sure to flag
    assert result["errors"][0]["wrong_flagged"] == 0  # a silent wrong call
    assert (result["review"]["calls_wrong"], result["review"]["calls_wrong_flagged"]) == (1, 0)


def test_evaluate_cells_counts_the_errors_a_reviewer_is_shown():
    probs, four, five = near_swap(0.7)
    samples = [Sample(Path(f"A/1/{i}.png"), label, "A", "1") for i, label in enumerate(MALE)]
    result = evaluate_cells(samples, probs, NORMAL)
    assert result["crop_accuracy_assembled"] == pytest.approx(44 / 46)
    assert result["errors"] == []  # a swap keeps the karyotype right
    assert result["review"] == {"flagged": 2, "flagged_rate": pytest.approx(2 / 46), "wrong_assembled": 2,
                                "wrong_flagged": 2, "alternative_right": 2, "crop_accuracy_after_review": 1.0,
                                "crop_accuracy_reassembled": 1.0, "complete_exact_reassembled": 1,
                                "flagged_again": 0, "crop_accuracy_rechecked": 1.0, "complete_exact_rechecked": 1,
                                "calls_wrong": 0, "calls_wrong_flagged": 0}


def test_evaluate_cells_counts_the_flags_whose_hint_is_the_truth():
    probs = confident(MALE)
    four, five = MALE.index("4"), MALE.index("5")
    set_probs(probs, four, NORMAL, c5=0.5, c6=0.38, c4=0.1)  # a close call, between the wrong two
    set_probs(probs, five, NORMAL, c4=0.7, c5=0.28)  # wrong and clear: exchanging costs 2.5 nats > ln 10
    samples = [Sample(Path(f"A/1/{i}.png"), label, "A", "1") for i, label in enumerate(MALE)]
    result = evaluate_cells(samples, probs, NORMAL)
    assert result["review"] == {"flagged": 1, "flagged_rate": pytest.approx(1 / 46), "wrong_assembled": 2,
                                "wrong_flagged": 1, "alternative_right": 0,
                                "crop_accuracy_after_review": pytest.approx(45 / 46),
                                # the flagged 4 set right, the cell assembled again: the 5 follows, and is
                                # flagged anew (placed against its own image's read), right where it stands
                                "crop_accuracy_reassembled": 1.0, "complete_exact_reassembled": 1,
                                "flagged_again": 1, "crop_accuracy_rechecked": 1.0, "complete_exact_rechecked": 1,
                                "calls_wrong": 0, "calls_wrong_flagged": 0}


def test_evaluate_cells_follows_a_reviewer_who_checks_what_a_corrected_call_flags_anew():
    """As in two real cells of the release: a true 2 read as a 3 is flagged (a close call), its
    partner, a true 3 read clearly as a 2, is not. Pinned, the flagged crop makes three 2s, and the
    counts move the 2 cheapest to move, a right one, rather than the partner; that move is flagged
    anew, and set right in a second look, the partner has to go: in a third look it is flagged
    where it now stands right, and pinned there, nothing new is flagged."""
    probs = confident(MALE)
    twos, threes = [i for i, c in enumerate(MALE) if c == "2"], [i for i, c in enumerate(MALE) if c == "3"]
    a, c = twos  # true 2s: a reads 3 by a little, c reads 2 but 3 is its runner-up
    b = threes[0]  # a true 3 that reads 2 clearly
    set_probs(probs, a, NORMAL, c3=0.55, c2=0.40)
    set_probs(probs, c, NORMAL, c2=0.90, c3=0.08)
    set_probs(probs, b, NORMAL, c2=0.76, c3=0.005)
    samples = [Sample(Path(f"A/1/{i}.png"), label, "A", "1") for i, label in enumerate(MALE)]
    result = evaluate_cells(samples, probs, NORMAL)
    called = read_cells(samples, probs, NORMAL).calls["A/1"]
    assert [called.assignments[i].label for i in (a, b, c)] == ["3", "2", "2"]
    assert [i for i, x in enumerate(called.assignments) if x.review] == [a]
    review = result["review"]
    assert (review["wrong_assembled"], review["wrong_flagged"]) == (2, 1)
    assert review["crop_accuracy_reassembled"] == pytest.approx(44 / 46)  # a right now, b still wrong, c moved
    assert review["flagged_again"] == 2 and review["crop_accuracy_rechecked"] == 1.0
    assert (review["complete_exact_reassembled"], review["complete_exact_rechecked"]) == (1, 1)


def test_read_cells_gives_each_row_its_assembled_label_in_sample_order():
    """Two cells interleaved row by row: the readings map back to the rows, a speck gets no label."""
    swapped, four, five = near_swap(0.7)  # cell A: the first 4 and 5 read as each other
    clean = confident(MALE)
    clean = np.vstack([clean, confident(["21"])])  # cell B: a 47th object, a speck below
    rows_a = list(range(0, 92, 2))  # A on even rows, B on odd rows (and one past the end)
    rows_b = list(range(1, 93, 2))[:46] + [92]
    probs = np.zeros((93, 24))
    probs[rows_a], probs[rows_b] = swapped, clean
    labels = MALE + ["21"]
    samples = [None] * 93
    for k, row in enumerate(rows_a):
        samples[row] = Sample(Path(f"A/{k}.png"), MALE[k], "A", "1")
    for k, row in enumerate(rows_b):
        samples[row] = Sample(Path(f"B/{k}.png"), labels[k], "B", "1")
    sizes = np.array([[100.0, 600.0]] * 93)
    sizes[92] = [8.0, 20.0]
    readings = read_cells(samples, probs, NORMAL, sizes=sizes)
    assembled = readings.assembled(NORMAL)
    assert readings.cells == {"A/1": rows_a, "B/1": rows_b}
    assert assembled[92] == -1 and bool(readings.fragments[92]) and readings.fragments.sum() == 1
    truth = np.array([NORMAL.index(s.label) for s in samples])
    assert np.flatnonzero(assembled != truth).tolist() == [2 * four, 2 * five, 92]
    assert (NORMAL.labels[assembled[2 * four]], NORMAL.labels[assembled[2 * five]]) == ("5", "4")
    result = evaluate_cells(samples, probs, NORMAL, sizes=sizes)
    assert result["crop_accuracy_assembled"] == pytest.approx(90 / 93) == np.mean(assembled == truth)


@pytest.mark.realdata
def test_real_cell_truth_strings(shared_data):
    """Truth karyotypes of the real data: normal cells read 46,XX/46,XY, aneuploid ones as labelled."""
    from collections import Counter, defaultdict

    from karyo.runtime.dataset import read_labeled_folder

    cells = defaultdict(list)
    for sample in read_labeled_folder(shared_data / "pki-dev"):
        cells[sample.cell_key].append(sample.label)
    calls = Counter(call_karyotype(labels).karyotype for labels in cells.values())
    assert calls["46,XX"] + calls["46,XY"] > 300
    assert calls["47,XY,+21"] >= 1 and calls["47,XXY"] >= 1 and calls["45,X"] >= 1


# --- CLI ---------------------------------------------------------------------------------------


@pytest.fixture()
def male_cell(tmp_path, tiny_bundle):
    """A folder with one 46,XY cell drawn from the tiny bundle's class templates (nested class folders)."""
    from tiny_models import noisy_crop

    rng = np.random.default_rng(5)
    root = tmp_path / "cell1"
    for i, label in enumerate(MALE):
        folder = root / f"clase{label}"
        folder.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(folder / f"{i}.png"), noisy_crop(NORMAL24.index(label), rng))
    return root


def test_cli_json_and_karyogram(tiny_bundle, male_cell, tmp_path):
    from karyo.runtime.cli import app

    png = tmp_path / "k.png"
    result = CliRunner().invoke(app, ["karyotype", str(tiny_bundle.path), str(male_cell), "--json",
                                      "--karyogram", str(png), "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    cell = document["cells"][0]
    assert cell["karyotype"] == "46,XY" and cell["count"] == 46
    assert len(cell["assignments"]) == 46
    assert {a["label"] for a in cell["assignments"]} == set(NORMAL24)
    assert png.is_file() and cv2.imread(str(png)).shape[0] > 300


def test_cli_says_which_provider_and_precision_read_the_cells(tiny_bundle, male_cell):
    """`karyotype` defaults to --provider auto: a CPU read must say why it is not on CUDA, as classify does
    (CPU-only machine: cpu, int8 and the reason; checked on an H100: cuda, fp16, no reason)."""
    from karyo.runtime.cli import app
    from karyo.runtime.session import create_session, cuda_status

    _, used = create_session(tiny_bundle.path / "model.fp32.onnx", "auto")
    precision = {"cpu": "int8", "cuda": "fp16"}[used]
    plain = CliRunner().invoke(app, ["karyotype", str(tiny_bundle.path), str(male_cell)])
    assert plain.exit_code == 0, plain.output
    (line,) = [text for text in plain.stderr.splitlines() if text.startswith("provider: ")]
    reason = "" if used == "cuda" else f" ({cuda_status()})"
    assert line.startswith(f"provider: {used}{reason}; precision: {precision} (") and line.endswith("orientation: p-arm-up")
    assert "46,XY" in plain.stdout and "provider: " not in plain.stdout  # stdout stays the calls alone
    document = json.loads(CliRunner().invoke(app, ["karyotype", str(tiny_bundle.path), str(male_cell), "--json"]).stdout)
    assert (document["provider"], document["precision"], document["orientation"]) == (used, precision, "p-arm-up")
    assert document["cuda_unavailable"] == (None if used == "cuda" else cuda_status())
    assert document["bundle"] == str(tiny_bundle.path) and document["cells"][0]["karyotype"] == "46,XY"
    cpu = json.loads(CliRunner().invoke(app, ["karyotype", str(tiny_bundle.path), str(male_cell), "--json",
                                              "--provider", "cpu", "--precision", "fp32"]).stdout)
    assert (cpu["provider"], cpu["precision"]) == ("cpu", "fp32")
    wrong = CliRunner().invoke(app, ["karyotype", str(tiny_bundle.path), str(male_cell), "--provider", "gpu"])
    assert wrong.exit_code == 2 and "'gpu' is not one of" in wrong.output


def test_cli_bad_crop_is_reported_and_left_out(tiny_bundle, male_cell, tmp_path):
    from karyo.runtime.cli import app

    (male_cell / "broken.png").write_bytes(b"not an image")
    # an empty cut: read anyway it took a chromosome's slot, and a 46,XY cell was called with 47 crops
    assert cv2.imwrite(str(male_cell / "blank.png"), np.full((60, 24), 245, np.uint8))
    result = CliRunner().invoke(app, ["karyotype", str(tiny_bundle.path), str(male_cell), "--precision", "fp32"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and "broken.png" in errors[0] + errors[1]
    assert any("blank.png: no chromosome in the image" in line for line in errors)
    assert re.search(rf"^{re.escape(str(male_cell))}: 46,XY  \(46 crops, (\d+ to review, )?2 unreadable\)", result.stdout), result.stdout


def test_cli_by_cell_and_karyogram_folder(tiny_bundle, tmp_path):
    from tiny_models import noisy_crop

    from karyo.runtime.cli import app

    rng = np.random.default_rng(9)
    data = tmp_path / "data"
    rows = ["path,label,case,cell"]
    for cell, labels in (("1", FEMALE), ("2", MALE + ["21"])):
        for i, label in enumerate(labels):
            relative = f"{label}/p{cell}_{i}.png"
            (data / label).mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(data / relative), noisy_crop(NORMAL24.index(label), rng))
            rows.append(f"{relative},{label},case{cell},{cell}")
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "pngs"
    result = CliRunner().invoke(app, ["karyotype", str(tiny_bundle.path), "--by-cell", str(data),
                                      "--karyogram", str(out), "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert "case1/1: 46,XX" in result.stdout
    assert "case2/2: 47,XY,+21" in result.stdout and "trisomy 21" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["case1_1.png", "case2_2.png"]
    # each patient summarized after its cells, against the truth the same rules make of its labels
    assert "case case1: 46,XX[1]  (1 cell counted" in result.stdout and "[truth 46,XX[1]]" in result.stdout
    assert "case case2: 47,XY,+21[1]  (1 cell counted" in result.stdout and "[truth 47,XY,+21[1]]" in result.stdout
    single = CliRunner().invoke(app, ["karyotype", str(tiny_bundle.path), "--by-cell", str(data),
                                      "--karyogram", str(tmp_path / "one.png")])
    assert single.exit_code == 2 and "several cells need a folder" in single.stderr
    missing = CliRunner().invoke(app, ["karyotype", str(tiny_bundle.path), "--by-cell", str(data), "case9/9"])
    assert missing.exit_code == 2 and "no cell case9/9" in missing.stderr


def test_cli_case_puts_a_patients_cell_folders_together(tiny_bundle, male_cell, tmp_path):
    import shutil

    from karyo.runtime.cli import app

    second = tmp_path / "cell2"
    shutil.copytree(male_cell, second)
    args = ["karyotype", str(tiny_bundle.path), str(male_cell), str(second), "--precision", "fp32", "--case", "P17"]
    document = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    (case,) = document["cases"]
    assert (case["case"], case["karyotype"], case["counted"]) == ("P17", "46,XY[2]", 2)
    assert case["lines"][0]["cells"] == [str(male_cell), str(second)] and "truth" not in case
    plain = CliRunner().invoke(app, args)
    assert plain.exit_code == 0 and plain.stdout.splitlines()[-1].startswith("case P17: 46,XY[2]  (2 cells counted")
    alone = json.loads(CliRunner().invoke(app, args[:-2] + ["--json"]).stdout)
    assert "cases" not in alone  # folders of unknown patients: no patient to summarize
    both = CliRunner().invoke(app, ["karyotype", str(tiny_bundle.path), "--by-cell", str(tmp_path), "--case", "P17"])
    assert both.exit_code == 2 and "--case names the patient of CELL folders" in both.stderr


def test_cli_calls_cells_under_the_trisomies_the_lab_sees(tiny_bundle, male_cell, monkeypatch):
    """--trisomies reaches the assembly (viable by default: a third 9 costs 8 nats, with any 6) and the
    JSON says which priors the calls were made under."""
    from karyo.runtime import karyotyper
    from karyo.runtime.cli import app

    seen: list[float] = []
    real = karyotyper.karyotype_cell

    def spy(probs, labels, priors=None, **kwargs):
        seen.append(priors.trisomy("9"))
        return real(probs, labels, priors, **kwargs)

    monkeypatch.setattr(karyotyper, "karyotype_cell", spy)
    for option, name, cost in ((["--trisomies", "any"], "any", 6.0), ([], "viable", 8.0)):
        seen.clear()
        result = CliRunner().invoke(app, ["karyotype", str(tiny_bundle.path), str(male_cell), "--json", "--precision", "fp32", *option])
        assert result.exit_code == 0, result.output
        document = json.loads(result.stdout)
        assert (document["trisomies"], document["cells"][0]["karyotype"], seen) == (name, "46,XY", [cost])
    wrong = CliRunner().invoke(app, ["karyotype", str(tiny_bundle.path), str(male_cell), "--trisomies", "marrow"])
    assert wrong.exit_code == 2 and "'marrow' is not one of" in wrong.output


def test_cli_refuses_a_binary_bundle_before_classifying(tmp_path, male_cell):
    from tiny_models import make_bundle

    from karyo.runtime.cli import app

    binary = make_bundle(tmp_path / "binary", scheme_name="binary:del(5)(p14)", precisions=("fp32",))
    result = CliRunner().invoke(app, ["karyotype", str(binary.path), str(male_cell)])
    assert result.exit_code == 2
    assert "all 24 chromosomes" in result.stderr and "lacks" in result.stderr


def test_a_crop_pinned_on_review_keeps_its_label_and_its_partner_follows():
    """A person sets the first 4 of a swapped pair right: the 5 read as a 4 moves back by the counts
    alone, still flagged (placed against its own image's top label) for the person to confirm."""
    probs, four, five = near_swap(0.7)
    assert [karyotype_cell(probs, NORMAL).assignments[i].label for i in (four, five)] == ["5", "4"]
    call = karyotype_cell(probs, NORMAL, pinned={four: "4"})
    assert (call.assignments[four].label, call.assignments[five].label) == ("4", "5")
    assert call.karyotype == "46,XY" and not call.assignments[four].review
    assert call.assignments[five].review and call.assignments[five].alternative == "4"
    assert call.assignments[five].swap_with is None  # no exchange with a pinned crop is offered
    assert [i for i, a in enumerate(call.assignments) if a.review] == [five]
    assert [i for i, a in enumerate(call.assignments) if a.corrected] == [four]  # the partner moved; no one set it
    assert not any(a.corrected for a in karyotype_cell(probs, NORMAL).assignments)
    # a 1 set to 9 by hand: the counts then move the likeliest other crop, a 9, into the empty
    # place of the 1s (5.3 nats, against 11 for 46,XY,-1,+9), and flag it; pin all three and the
    # pins hold against the counts
    nines = [i for i, label in enumerate(MALE) if label == "9"]
    one = karyotype_cell(confident(MALE), NORMAL, pinned={0: "9"})
    moved = [i for i, a in enumerate(one.assignments) if a.label != MALE[i]]
    assert one.karyotype == "46,XY" and one.assignments[0].label == "9" and not one.assignments[0].review
    assert len(moved) == 2 and moved[1] in nines and one.assignments[moved[1]].label == "1" and one.assignments[moved[1]].review
    assert karyotype_cell(confident(MALE), NORMAL, pinned={0: "9", **{i: "9" for i in nines}}).karyotype == "46,XY,-1,+9"
    with pytest.raises(ValueError, match="crop 46 pinned, but the cell has 46 crops"):
        karyotype_cell(probs, NORMAL, pinned={46: "4"})
    with pytest.raises(ValueError, match="not a label of scheme normal24"):
        karyotype_cell(probs, NORMAL, pinned={0: "del(5)(p14)"})

