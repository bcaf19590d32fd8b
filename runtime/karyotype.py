"""Karyotype call: from one cell's (assembled) labels to an ISCN string and plain-language findings.

The call only counts labels, so the same function turns the *true* labels of a cell into its true
karyotype; that is what ``karyo.runtime.cell_evaluation`` compares against.

Incomplete cells. Real metaphases lose chromosomes in spreading and cutting (the study data has
cells of 37-46 crops), and a cell missing seven chromosomes is not seven monosomies. The rule:
count the copies missing against a normal cell, over the assembled counts (which already weigh
each crop's evidence, see ``karyo.runtime.assembly``):

    missing = sum over autosomes of max(0, 2 - copies) + max(0, 2 - (X copies + Y copies))

A cell with at most ``max_losses`` (default 1) missing copies is *complete* and every deviation
is called (``45,X``, ``45,XY,-21``, ``47,XY,+21``). With more, the cell is *incomplete*:
two or more simultaneous monosomies are not a viable constitutional karyotype and random loss
explains them far better. An incomplete call keeps what loss cannot explain (gains, structural
variants) and ends in ISCN's ``inc``: ``40,XY,+21,inc``; its losses are not reported as
monosomies. The crop count and the missing copies are in the findings.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from .assembly import (  # re-exported: karyo.runtime.karyotype is the public face of assembly too
    CONSTITUTIONAL_TRISOMIES,
    DEFAULT_TRISOMIES,
    SEX_COMPLEMENTS,
    TRISOMY_COSTS,
    VIABLE_TRISOMIES,
    Assembly,
    AssemblyPriors,
    CropAssignment,
    assemble_cell,
    check_scheme,
)
from .cell_size import JOINED_PAIR_MIN_LOG_ODDS, MIN_CELL_CROPS, SizePrior, fragment_mask, relative_sizes
from .labels import AUTOSOMES, STRUCTURAL, LabelScheme, chromosome_of

FULL_CELL = 46
_COPY_WORDS = {0: "nullisomy", 1: "monosomy", 3: "trisomy", 4: "tetrasomy", 5: "pentasomy"}
_SEX_FINDINGS = {(1, 0): "monosomy X", (2, 1): "XXY (Klinefelter)", (1, 2): "XYY", (3, 0): "trisomy X"}


@dataclass
class KaryotypeCall:
    karyotype: str
    count: int
    complete: bool
    findings: list[str]
    assignments: list[CropAssignment] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "assignments"},
                "assignments": [a.to_dict() for a in self.assignments]}


def _variant_order(label: str) -> int:
    return list(STRUCTURAL).index(label)


def _chromosome_tokens(chromosome: str, normal: int, variants: list[str], expected: int, complete: bool) -> list[str]:
    """ISCN items for one autosome: losses, then extra copies; a variant filling an expected slot is listed plain."""
    variants = sorted(variants, key=_variant_order)
    copies = normal + len(variants)
    tokens: list[str] = []
    if copies < expected and complete:
        tokens += [f"-{chromosome}"] * (expected - copies)
    plain_variants = max(0, min(len(variants), expected - normal))
    tokens += [f"+{chromosome}"] * max(0, normal - expected)
    tokens += variants[:plain_variants] + [f"+{v}" for v in variants[plain_variants:]]
    return tokens


def _copies(labels: list[str]) -> Counter[str]:
    """Copies of each chromosome among `labels`, a structural variant counted as its chromosome."""
    return Counter(chromosome_of(label) for label in labels)


def _missing_copies(copies: Counter[str]) -> int:
    """Copies missing against a normal cell (the module docstring's rule)."""
    return sum(max(0, 2 - copies[c]) for c in AUTOSOMES) + max(0, 2 - (copies["X"] + copies["Y"]))


def call_karyotype(
    labels: list[str],
    assignments: list[CropAssignment] | None = None,
    full_cell: int = FULL_CELL,
    max_losses: int = 1,
) -> KaryotypeCall:
    """ISCN call for one cell from its crop labels (assembled or true). See the module docstring.

    `full_cell` only words the incomplete-cell finding; completeness is decided by `max_losses`.
    """
    normal: Counter[str] = Counter()
    variants: dict[str, list[str]] = defaultdict(list)
    for label in labels:
        parent = chromosome_of(label)
        if label in STRUCTURAL:
            variants[parent].append(label)
        else:
            normal[parent] += 1
    copies = _copies(labels)
    n_sex = copies["X"] + copies["Y"]
    missing = _missing_copies(copies)
    count = len(labels)
    complete = count > 0 and missing <= max_losses

    tokens: list[str] = ["X" * normal["X"] + "Y" * normal["Y"]] if normal["X"] + normal["Y"] else []
    tokens += sorted(variants["X"], key=_variant_order)
    findings: list[str] = []
    if not complete:
        findings.append(f"incomplete cell: {count} of {full_cell} crops")
    sex_key = (copies["X"], copies["Y"])
    if sex_key not in ((2, 0), (1, 1)):
        if complete:
            findings.append(_SEX_FINDINGS.get(sex_key, f"sex chromosomes: {sex_key[0]} X, {sex_key[1]} Y"))
        elif n_sex > 2 and sex_key in _SEX_FINDINGS:
            findings.append(_SEX_FINDINGS[sex_key])
        else:
            findings.append(f"sex chromosomes uncertain (incomplete cell): {sex_key[0]} X, {sex_key[1]} Y seen")
    for chromosome in AUTOSOMES:
        n = copies[chromosome]
        tokens += _chromosome_tokens(chromosome, normal[chromosome], variants[chromosome], 2, complete)
        if n > 2 or (n < 2 and complete):
            findings.append(f"{_COPY_WORDS.get(n, f'{n} copies of')} {chromosome}")
    findings += [f"structural: {v}" for c in ("X",) + AUTOSOMES for v in sorted(variants[c], key=_variant_order)]
    if not complete:
        tokens.append("inc")
    karyotype = ",".join([str(count)] + tokens)
    return KaryotypeCall(karyotype, count, complete, findings, list(assignments or []))


def karyotype_cell(
    probs: np.ndarray,
    labels: LabelScheme,
    priors: AssemblyPriors | None = None,
    paths: list[str | None] | None = None,
    full_cell: int = FULL_CELL,
    max_losses: int = 1,
    sizes: np.ndarray | None = None,
    size_prior: SizePrior | None = None,
    pinned: Mapping[int, str] | None = None,
) -> KaryotypeCall:
    """Assemble one cell (`probs`: N crops x classes) and call it; `paths` are carried into the assignments.

    With `sizes` (N x 2 chromosome length and area, NaN if unmeasured), objects far too small for a
    chromosome of this cell are left out of the count (:func:`call_cell`), and with the bundle's
    `size_prior` each crop's size relative to this cell is weighed in first (``karyo.runtime.cell_size``).

    `pinned` (row -> label) are crops a person has labelled on review: each keeps that label
    whatever its image reads (a speck so labelled is counted), and the rest of the cell is assembled
    around them, so setting one crop of a swapped 4 and 5 right moves its partner too."""
    probs, fragments, relative = size_evidence(probs, sizes, ["cell"] * len(probs), size_prior)
    if pinned:
        probs, fragments = pin_crops(probs, fragments, labels, pinned)
    call = call_cell(probs, labels, priors, fragments, paths, full_cell=full_cell, max_losses=max_losses,
                     relative=relative, size_prior=size_prior)
    if not pinned:
        return call
    return replace(call, assignments=[replace(a, corrected=True) if a.index in pinned else a for a in call.assignments])


def pin_crops(probs: np.ndarray, fragments: np.ndarray | None, labels: LabelScheme,
              pinned: Mapping[int, str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Certain probabilities for the pinned rows (moving one then costs -ln(prob_floor), 21 nats, more
    than any count prior), and those rows counted whatever their size."""
    probs = np.array(probs, dtype=np.float64)
    fragments = None if fragments is None else np.array(fragments, dtype=bool)
    for row, label in pinned.items():
        if not 0 <= row < len(probs):
            raise ValueError(f"crop {row} pinned, but the cell has {len(probs)} crops")
        if label not in labels:
            raise ValueError(f"crop {row} pinned as {label!r}, which is not a label of scheme {labels.name}")
        probs[row] = 0.0
        probs[row, labels.index(label)] = 1.0
        if fragments is not None:
            fragments[row] = False
    return probs, fragments


def size_evidence(
    probs: np.ndarray, sizes: np.ndarray | None, cells: list[str], size_prior: SizePrior | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Probabilities with each crop's size relative to its cell weighed in (with a prior), which
    crops are too small for a whole chromosome, and the relative sizes; `probs`, None, None without sizes."""
    if sizes is None:
        return probs, None, None
    relative = relative_sizes(sizes, cells, size_prior.min_cell_crops if size_prior is not None else MIN_CELL_CROPS)
    sized = size_prior.apply(probs, relative) if size_prior is not None else probs
    return sized, fragment_mask(relative), relative


def _article(label: str) -> str:
    """ "an 8", "an X", "an i(18)(q10)", "a 7": the article a label is read with."""
    return "an" if label.startswith(("8", "11", "18", "X", "i(", "inv")) else "a"


def _missing_classes(call_labels: list[str], labels: LabelScheme) -> list[int]:
    """The classes a complete cell's single missing copy may be: the autosome one short, or X and Y
    when only one sex chromosome was seen (which of the two is missing the count cannot say)."""
    copies = _copies(call_labels)
    short = [c for c in AUTOSOMES if copies[c] < 2]
    if copies["X"] + copies["Y"] < 2:
        short += ["X", "Y"]
    return [labels.index(c) for c in short if c in labels.labels]


def _joined_pair(
    counted: list[str], whole: np.ndarray, labels: LabelScheme, relative: np.ndarray, size_prior: SizePrior
) -> tuple[int, int, float] | None:
    """(row, missing class, ln odds) of the crop most likely to hold the chromosome a one-short cell
    misses on top of its own (`SizePrior.joined_pair_log_odds`), when the odds reach
    `JOINED_PAIR_MIN_LOG_ODDS`; else None. `counted`: the labels placed on the `whole` rows."""
    own = np.array([labels.index(label) for label in counted])
    best: tuple[int, int, float] | None = None
    for other in _missing_classes(counted, labels):
        odds = size_prior.joined_pair_log_odds(relative[whole], own, other)
        k = int(np.argmax(odds))
        if odds[k] >= JOINED_PAIR_MIN_LOG_ODDS and (best is None or odds[k] > best[2]):
            best = (int(whole[k]), other, float(odds[k]))
    return best


def call_cell(
    probs: np.ndarray,
    labels: LabelScheme,
    priors: AssemblyPriors | None = None,
    fragments: np.ndarray | None = None,
    paths: list[str | None] | None = None,
    full_cell: int = FULL_CELL,
    max_losses: int = 1,
    relative: np.ndarray | None = None,
    size_prior: SizePrior | None = None,
) -> KaryotypeCall:
    """Assemble and call one cell whose probabilities already carry any size evidence.

    Crops marked in `fragments` take no chromosome slot: a speck that assembly had to place would
    become a spurious extra copy (a "third 21", a second Y) or push a real crop out of its pair.
    They are not counted, stay in the assignments (``fragment=True``, up for review, their top-1
    label only a hint) and are named in the findings, because a small supernumerary marker
    chromosome looks the same to size and only a person can tell it from debris.

    With `relative` sizes (N x 2, as `relative_sizes` gives them) and a `size_prior`, a complete cell
    called one copy short is checked for the opposite mistake: one crop holding two chromosomes
    (touching or overlapping, cut as one object), which reads exactly as that loss. The call is
    left as counted, since only a person can tell a pile-up from a monosomy, but the crop whose
    area fits its own chromosome and the missing one together (20:1 or more) is flagged with the
    missing chromosome as its alternative, and a finding says so.
    """
    probs = np.asarray(probs, dtype=np.float64)
    n = len(probs)
    fragments = np.zeros(n, dtype=bool) if fragments is None else np.asarray(fragments, dtype=bool)
    if fragments.shape != (n,):
        raise ValueError(f"{fragments.shape[0]} fragment flags for {n} crops")
    if paths is not None and len(paths) != n:
        raise ValueError(f"{len(paths)} paths for {n} crops")
    whole = np.flatnonzero(~fragments)
    assembly = assemble_cell(probs[whole], labels, priors)
    placed: list[CropAssignment] = [None] * n  # type: ignore[list-item]  # every row is filled below
    for assignment, row in zip(assembly.assignments, whole):
        partner = None if assignment.swap_with is None else int(whole[assignment.swap_with])
        placed[row] = replace(assignment, index=int(row), swap_with=partner)
    for row in np.flatnonzero(fragments):
        top = int(probs[row].argmax())
        label, p = labels.labels[top], float(probs[row, top])
        placed[row] = CropAssignment(int(row), label, p, label, p, review=True, fragment=True)
    if paths is not None:
        placed = [replace(a, path=None if path is None else str(path)) for a, path in zip(placed, paths)]
    counted = [placed[row].label for row in whole]
    call = call_karyotype(counted, placed, full_cell=full_cell, max_losses=max_losses)
    one_short = call.complete and _missing_copies(_copies(counted)) == 1
    if one_short and relative is not None and size_prior is not None:
        joined = _joined_pair(counted, whole, labels, np.asarray(relative, dtype=np.float64).reshape(-1, 2), size_prior)
        if joined is not None:
            row, other, odds = joined
            own, lost = placed[row].label, labels.labels[other]
            call.assignments[row] = replace(call.assignments[row], review=True, alternative=lost, joined=True)
            call.findings.append(
                f"the crop placed as {own} measures like {_article(own)} {own} and {_article(lost)} {lost} together "
                f"({min(math.exp(odds), 1e9):.3g}:1): two chromosomes cut as one object read as a loss: review"
            )
    if fragments.any():
        k = int(fragments.sum())
        call.findings.append(
            f"{k} object{'s' if k > 1 else ''} too small for a whole chromosome, not counted "
            f"(debris, a fragment or a small marker): review"
        )
    return call


__all__ = [
    "AssemblyPriors", "Assembly", "CropAssignment", "KaryotypeCall", "SEX_COMPLEMENTS", "TRISOMY_COSTS", "DEFAULT_TRISOMIES",
    "CONSTITUTIONAL_TRISOMIES", "VIABLE_TRISOMIES",
    "assemble_cell", "call_cell", "call_karyotype", "check_scheme", "karyotype_cell", "pin_crops", "size_evidence", "FULL_CELL",
]
