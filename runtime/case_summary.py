"""One patient's karyotype from the calls of its cells, as a lab reports it: ISCN with cell counts.

A lab reports a patient, not a metaphase. It counts about 20 cells, and a change seen in one cell
is usually the preparation's (a chromosome lost in spreading, a neighbour cut away), while the same
change in several cells is a cell line, i.e. mosaicism. ISCN's clone rule draws that line: the same
gain or structural change in at least two cells, the same loss in at least three. This module
applies it to whole cell calls (cells grouped by their exact karyotype), so what it reports can be
checked against the cell lines by eye:

- a line is *clonal* when its cells meet the rule (3 for a line that only loses chromosomes, 2 for
  any other change); the normal line (46,XX or 46,XY, the commoner of the two) always counts;
- the patient's karyotype lists the clonal abnormal lines, most cells first, then the normal line
  (ISCN lists the normal diploid line last), joined by ``/`` with ``mos`` in front for a
  constitutional mosaic: ``mos 47,XY,+21[3]/46,XY[17]``; lines of 46,XX and 46,XY cells both
  clonal are written as ISCN writes a chimera, ``chi 46,XX[15]/46,XY[5]`` (more often mixed slides
  than a chimera; the notes say so);
- with no clonal line at all (one or two cells counted), the line with the most cells stands alone
  when it is the only one with that many, and the notes say on how few cells it rests; when two
  lines tie for the most cells (two cells that disagree, say) there is no karyotype (``None``), nor
  when that line only loses chromosomes another cell of the patient, complete or not, holds two
  of (a lone 45,XY,-21 beside cells with two 21s was lost in spreading);
- lines below the rule are listed as non-clonal with a note on what they call for (a single gain:
  count more cells before ruling mosaicism out; a single loss: likely lost in spreading);
- incomplete cells (``inc``: too many chromosomes missing to call a loss) are not counted; the
  gains they show are named, with how many of them show each (``+21 in 2 of them``).

The rule is applied to whole cells, not to each change: a cell with the clone's trisomy and one
more random loss (``46,XY,+21,-16``) stands on its own line as non-clonal, where a cytogeneticist
would count it in the clone with a random loss. The notes name such cells, so nothing is hidden.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from .labels import chromosome_of

if TYPE_CHECKING:  # karyotype imports this module: the type only
    from .karyotype import KaryotypeCall

NORMAL_KARYOTYPES = ("46,XX", "46,XY")
GAIN_CLONE_CELLS = 2  # ISCN: a gain or structural change in two cells makes a clone
LOSS_CLONE_CELLS = 3  # a loss needs three: chromosomes are lost in spreading all the time
CELLS_TO_COUNT = 20  # what a routine constitutional count covers


@dataclass(frozen=True)
class CellCall:
    """What the summary needs of one cell's call (a `KaryotypeCall` and its name)."""

    name: str
    karyotype: str
    complete: bool
    review: int = 0  # crops flagged for review in this cell
    copies: dict[str, int] | None = None  # copies of each chromosome seen (autosomes, "X", "Y"), if known

    @classmethod
    def of(cls, name: str, call: KaryotypeCall, labels: Iterable[str | None] | None = None) -> CellCall:
        """A cell's call as the summary needs it; `labels` for a call made from labels alone (the
        truth's), else the chromosomes its crops were placed as."""
        if labels is not None:
            return cls(name, call.karyotype, call.complete, sum(a.review for a in call.assignments), copies_of(labels))
        return cls.placed(name, call.karyotype, call.complete, [(a.label, a.fragment, a.review) for a in call.assignments])

    @classmethod
    def placed(cls, name: str, karyotype: str, complete: bool, crops: Iterable[tuple[str, bool, bool]]) -> CellCall:
        """From each crop's (label, fragment, review), as a call's assignments or its JSON rows hold
        them: a fragment is placed as no chromosome."""
        crops = list(crops)
        return cls(name, karyotype, complete, sum(bool(review) for _, _, review in crops),
                   copies_of(None if fragment else label for label, fragment, _ in crops))


def copies_of(labels: Iterable[str | None]) -> dict[str, int]:
    """Copies of each chromosome among a cell's labels (a structural variant counts as its
    chromosome; None, a crop that got no chromosome, does not count)."""
    return dict(Counter(chromosome_of(label) for label in labels if label is not None))


@dataclass
class CellLine:
    karyotype: str
    cells: list[str]
    clonal: bool

    @property
    def count(self) -> int:
        return len(self.cells)

    def iscn(self) -> str:
        return f"{self.karyotype}[{self.count}]"


@dataclass
class CaseSummary:
    case: str
    karyotype: str | None  # ISCN with cell counts; None when no line can stand for the patient
    counted: int  # complete cells, the ones the karyotype counts
    lines: list[CellLine]  # the lines in the karyotype, in ISCN order
    nonclonal: list[CellLine]  # lines of counted cells below the clone rule
    incomplete: list[str] = field(default_factory=list)  # cells not counted
    review_cells: int = 0  # counted cells with at least one crop to review
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _parts(karyotype: str) -> tuple[int, str, list[str]]:
    """Chromosome count, sex complement and the remaining items of a cell's ISCN string."""
    items = karyotype.split(",")
    count = int(items[0])
    rest = items[1:]
    sex = rest.pop(0) if rest and rest[0] and set(rest[0]) <= {"X", "Y"} else ""
    return count, sex, rest


def is_loss_only(karyotype: str) -> bool:
    """Whether a line only lacks chromosomes (the clone rule asks three cells of those, not two)."""
    count, sex, items = _parts(karyotype)
    gains = count > 46 or len(sex) > 2 or any(not item.startswith("-") for item in items)
    return not gains and (count < 46 or len(sex) < 2 or any(item.startswith("-") for item in items))


def cells_for_clone(karyotype: str) -> int:
    return LOSS_CLONE_CELLS if is_loss_only(karyotype) else GAIN_CLONE_CELLS


def _lines(cells: Iterable[CellCall]) -> list[CellLine]:
    """Counted cells grouped by karyotype, most cells first (first seen first among equals)."""
    grouped: dict[str, list[str]] = {}
    for cell in cells:
        grouped.setdefault(cell.karyotype, []).append(cell.name)
    lines = [CellLine(karyotype, names, False) for karyotype, names in grouped.items()]
    return sorted(lines, key=lambda line: -line.count)


def _gains_seen(karyotypes: list[str]) -> dict[str, int]:
    """Gains and structural changes in incomplete cells, each with how many cells show it: an
    incomplete cell cannot say what it lost, but what it has too much of still counts as evidence."""
    seen: dict[str, int] = {}
    for karyotype in karyotypes:
        _, sex, items = _parts(karyotype)
        gains = {item for item in items if item not in ("inc",) and not item.startswith("-")}
        if len(sex) > 2:
            gains.add(sex)  # XXY, XXX, XYY: an extra sex chromosome
        for gain in sorted(gains):
            seen[gain] = seen.get(gain, 0) + 1
    return seen


def _losses_held_elsewhere(line: CellLine, cells: list[CellCall]) -> str:
    """For a line that only loses chromosomes: the lost ones (e.g. "21s", "sex chromosomes") when
    another cell of the patient, complete or not, holds two of each. A lone 45,XY,-21 beside cells
    with two 21s is a chromosome lost in spreading, not the patient's karyotype. Empty otherwise."""
    if not is_loss_only(line.karyotype):
        return ""
    _, sex, items = _parts(line.karyotype)
    lost = [item[1:] for item in items if item.startswith("-")]
    others = [cell.copies for cell in cells if cell.name not in line.cells and cell.copies is not None]
    holds = lambda copies: (all(copies.get(c, 0) >= 2 for c in lost)  # noqa: E731
                            and (len(sex) >= 2 or copies.get("X", 0) + copies.get("Y", 0) >= 2))
    if not any(holds(copies) for copies in others):
        return ""
    return " and ".join([f"{c}s" for c in lost] + ([] if len(sex) >= 2 else ["sex chromosomes"]))


def _nonclonal_note(line: CellLine) -> str:
    cells = f"{line.count} cell{'s' if line.count > 1 else ''}"
    if is_loss_only(line.karyotype):
        return (f"{line.karyotype} in {cells}: a loss needs {LOSS_CLONE_CELLS} cells to be a cell line; "
                "likely lost in spreading")
    return (f"{line.karyotype} in {cells}: below the {GAIN_CLONE_CELLS} cells of a cell line; "
            "count more cells to rule out mosaicism")


def summarize_case(case: str, cells: list[CellCall], constitutional: bool = True) -> CaseSummary:
    """The patient's karyotype from its cells' calls (the module docstring's rules).

    `constitutional` writes ``mos`` in front of a karyotype of several lines (ISCN's constitutional
    mosaic); for marrow or tumour work (`--trisomies any`) the lines stand without it."""
    counted = [cell for cell in cells if cell.complete]
    incomplete = [cell.name for cell in cells if not cell.complete]
    lines = _lines(counted)
    normals = [line for line in lines if line.karyotype in NORMAL_KARYOTYPES]
    # the commoner sex is the normal line (a lone cell of the other is a misread or a mix-up); a tie names neither
    normal = normals[0] if normals and (len(normals) == 1 or normals[1].count < normals[0].count) else None
    for line in lines:
        line.clonal = line is normal or line.count >= cells_for_clone(line.karyotype)
    notes: list[str] = []
    held = ""
    if not any(line.clonal for line in lines) and lines:
        top = lines[0]
        held = _losses_held_elsewhere(top, cells)
        if held:  # said here, so not again among the non-clonal lines
            notes.append(f"{top.karyotype} in {top.count} cell{'s' if top.count > 1 else ''}, while other cells "
                         f"hold two {held}: likely lost in spreading")
        elif len(lines) == 1 or lines[1].count < top.count:
            top.clonal = True
            notes.append(f"{top.karyotype} rests on {top.count} cell{'s' if top.count > 1 else ''}, "
                         f"below the {cells_for_clone(top.karyotype)} of a cell line")
        else:
            notes.append("no line has more cells than every other")
    abnormal = [line for line in lines if line.clonal and line is not normal]
    reported = abnormal + ([normal] if normal is not None else [])
    nonclonal = [line for line in lines if not line.clonal]
    chimera = sum(line.karyotype in NORMAL_KARYOTYPES for line in reported) > 1  # cell lines of both sexes
    if chimera:
        reported.sort(key=lambda line: -line.count)  # no normal line to put last: both are
    if reported:
        prefix = ("chi " if chimera else "mos ") if constitutional and len(reported) > 1 else ""
        karyotype: str | None = prefix + "/".join(line.iscn() for line in reported)
    else:
        karyotype = None
    notes += [_nonclonal_note(line) for line in nonclonal
              if line.karyotype not in NORMAL_KARYOTYPES and not (held and line is lines[0])]
    if len(normals) > 1:
        notes.append("cells read both 46,XX and 46,XY: check for a misread sex chromosome, mixed slides or chimerism")
    if counted and len(counted) < CELLS_TO_COUNT:
        notes.append(f"fewer cells than the {CELLS_TO_COUNT} of a routine count")
    if incomplete:
        seen = _gains_seen([cell.karyotype for cell in cells if not cell.complete])
        notes.append(f"{len(incomplete)} incomplete cell{'s' if len(incomplete) > 1 else ''} not counted"
                     + (f" ({', '.join(f'{gain} in {n}' for gain, n in seen.items())} of them)" if seen else ""))
    review_cells = sum(cell.review > 0 for cell in counted)
    return CaseSummary(case, karyotype, len(counted), reported, nonclonal, incomplete, review_cells, notes)


def summarize_cases(cells: list[tuple[str, CellCall]], constitutional: bool = True) -> list[CaseSummary]:
    """Cells given as (case, cell call) pairs, summarized case by case in the order cases first appear."""
    grouped: dict[str, list[CellCall]] = {}
    for case, cell in cells:
        grouped.setdefault(case, []).append(cell)
    return [summarize_case(case, members, constitutional) for case, members in grouped.items()]


def compare_cases(cells: list[tuple[str, CellCall, CellCall]], constitutional: bool = True) -> dict[str, Any]:
    """Patients called exactly: (case, true cell, called cell) triples summarized both ways and compared.

    A case counts when its truth has a karyotype (some line stands for it); exact means the same
    ISCN string, cell counts included, so one cell called wrong in a patient's count shows."""
    truths = summarize_cases([(case, truth) for case, truth, _ in cells], constitutional)
    calls = {s.case: s for s in summarize_cases([(case, called) for case, _, called in cells], constitutional)}
    judged = [(truth, calls[truth.case]) for truth in truths if truth.karyotype is not None]
    exact = [truth.karyotype == called.karyotype for truth, called in judged]
    abnormal = [(truth, called) for truth, called in judged if not _normal_only(truth)]
    return {
        "cases": len(truths),
        "with_karyotype": len(judged),
        "exact": sum(exact),
        "exact_rate": sum(exact) / len(judged) if judged else 0.0,
        "abnormal": [{"case": t.case, "truth": t.karyotype, "called": c.karyotype, "right": t.karyotype == c.karyotype}
                     for t, c in abnormal],
        "errors": [{"case": t.case, "truth": t.karyotype, "called": c.karyotype,
                    "cells": [name for line in t.lines + t.nonclonal for name in line.cells] + t.incomplete}
                   for (t, c), right in zip(judged, exact) if not right],
    }


def _normal_only(summary: CaseSummary) -> bool:
    """Whether the patient's karyotype is one normal line (46,XX[n] or 46,XY[n])."""
    return len(summary.lines) == 1 and summary.lines[0].karyotype in NORMAL_KARYOTYPES


def case_line(summary: CaseSummary, truth: CaseSummary | None = None) -> str:
    """One plain line per patient: the karyotype, how many cells it counts, what to look at."""
    called = summary.karyotype or "no karyotype"
    parts = [f"{summary.counted} cell{'s' if summary.counted != 1 else ''} counted"]
    if summary.review_cells:
        parts.append(f"{summary.review_cells} with crops to review")
    line = f"case {summary.case}: {called}  ({', '.join(parts)})"
    if summary.notes:
        line += "  " + "; ".join(summary.notes)
    if truth is not None:
        line += f"  [truth {truth.karyotype or 'no karyotype'}{'' if truth.karyotype == summary.karyotype else ' MISMATCH'}]"
    return line


__all__ = [
    "CaseSummary", "CellCall", "CellLine", "GAIN_CLONE_CELLS", "LOSS_CLONE_CELLS", "NORMAL_KARYOTYPES", "case_line",
    "cells_for_clone", "compare_cases", "copies_of", "is_loss_only", "summarize_case", "summarize_cases",
]
