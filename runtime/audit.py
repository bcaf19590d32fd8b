"""Label audit: the crops of a lab's own labeled cells whose label the model disputes, and how.

A lab trains karyo on karyotypes its staff sorted by hand, and hand-sorted karyotypes carry
mistakes: a karyogram whose rows slipped by one place (in one pki-dev cell the crops from 18 on
are each labelled as the next chromosome), two homologs of neighbouring pairs put in each other's place, a
single crop dropped in the wrong box. Training learns those mistakes and evaluation counts them
against the model. The audit reads every crop the way `karyo karyotype` does (each crop's size in
its cell weighed in, the cell assembled jointly), and wherever the assembled label differs from
the label given and the crop's own evidence favours it, it measures by how much:

    evidence = ln p(suggested) - ln p(label given)     (nats; the odds are e**evidence)

The disputed crops of one cell are then grouped by the pattern a person would check for:

- ``shift``: at least :data:`SHIFT_MIN_CROPS` crops whose labels all sit the same number of
  places from what they look like (in the order 1..22, X, Y): a slipped karyogram;
- ``exchange``: two crops whose labels are each other's suggestion, the trade a person or the
  model makes between look-alikes (4 and 5, 21 and 22), so it asks for a look, not a verdict;
- ``single``: one crop on its own.

A finding is reported when its summed evidence reaches ``ln(min_odds)``; findings are ranked by
that evidence, so a lab checks the strongest first. The audit only means something on cases the
model never trained on (it learned the labels of those it did): `karyo audit` says how many of a
folder's cases the bundle saw. Crops whose cell is unknown are audited alone (top-1 against label).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from .cell_size import SizePrior
from .dataset import Sample
from .labels import NORMAL24, LabelScheme, chromosome_of

SHIFT_MIN_CROPS = 3  # two crops one place off are as often an exchange or two slips as a slipped row
DEFAULT_MIN_ODDS = 20.0  # a finding is listed when the model favours its suggestion 20:1 or more
KINDS: tuple[str, ...] = ("shift", "exchange", "single")


@dataclass(frozen=True)
class DisputedCrop:
    """One crop whose label the model disputes: what it was given, what it looks like, by how much."""

    path: str
    cell: str  # the cell key (case/cell), "" when the data does not say
    case: str
    label: str
    suggested: str
    evidence: float  # ln p(suggested) - ln p(label), with the crop's size in its cell weighed in
    turned: bool = False  # read turned half a circle (`--orientation any`): the file shows it upside down

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "cell": self.cell, "case": self.case, "label": self.label, "suggested": self.suggested,
                "evidence": round(self.evidence, 3), "odds": _odds(self.evidence), "turned": self.turned}


@dataclass(frozen=True)
class Finding:
    """One pattern of disputed labels in one cell (see the module docstring for the kinds)."""

    kind: str
    cell: str
    crops: tuple[DisputedCrop, ...]
    offset: int = 0  # shift only: how many places (1..22, X, Y) the labels sit after what the crops look like

    @property
    def evidence(self) -> float:
        return float(sum(c.evidence for c in self.crops))

    @property
    def case(self) -> str:
        return self.crops[0].case

    def describe(self) -> str:
        """One line a cytogeneticist can act on."""
        first = self.crops[0]
        if self.kind == "shift":
            where = "before" if self.offset > 0 else "after"
            span = f"{self.crops[0].label} to {self.crops[-1].label}"
            places = f"{abs(self.offset)} place{'s' if abs(self.offset) > 1 else ''}"
            return (f"{len(self.crops)} crops labelled {span} look like the chromosome {places} {where} their label "
                    f"(e.g. labelled {first.label}, looks like {first.suggested}): a slipped karyogram?")
        if self.kind == "exchange":
            a, b = self.crops
            return f"labels {a.label} and {b.label} look exchanged: {a.path} and {b.path}"
        return f"labelled {first.label}, looks like {first.suggested}: {first.path}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "cell": self.cell, "evidence": round(self.evidence, 3), "odds": _odds(self.evidence),
                "offset": self.offset, "note": self.describe(), "crops": [c.to_dict() for c in self.crops]}


@dataclass
class LabelAudit:
    findings: list[Finding]  # strongest first
    crops: int  # crops audited
    cells: int  # cells audited jointly (crops without a cell are audited alone)
    disputed: int  # crops whose assembled label differs from the label given, whatever the odds
    min_odds: float

    def counts(self) -> dict[str, int]:
        return {kind: sum(f.kind == kind for f in self.findings) for kind in KINDS}

    def to_dict(self) -> dict[str, Any]:
        return {"crops": self.crops, "cells": self.cells, "disputed": self.disputed, "min_odds": self.min_odds,
                "findings_by_kind": self.counts(), "crops_in_findings": sum(len(f.crops) for f in self.findings),
                "findings": [f.to_dict() for f in self.findings]}


def audit_labels(
    samples: list[Sample],
    probs: np.ndarray,
    labels: LabelScheme,
    sizes: np.ndarray | None = None,
    size_prior: SizePrior | None = None,
    min_odds: float = DEFAULT_MIN_ODDS,
    turned: np.ndarray | None = None,
) -> LabelAudit:
    """Audit the labels of `samples` against the model's reading (`probs`, row for row); `turned`
    (row for row) marks the crops read turned half a circle, so a reviewer knows the file lies so."""
    from .cell_evaluation import read_cells
    from .karyotype import check_scheme

    if min_odds < 1.0:
        raise ValueError(f"min_odds {min_odds}: the odds a finding needs are 1 (every dispute) or more, like 20")
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(samples), len(labels)):
        raise ValueError(f"probabilities must be {len(samples)} x {len(labels)}, got {probs.shape}")
    given = np.array([labels.index(s.label) for s in samples], dtype=np.int64)
    sized = probs.copy()
    assembled = probs.argmax(axis=1) if len(samples) else np.zeros(0, dtype=np.int64)
    celled = [i for i, s in enumerate(samples) if s.has_cell]
    try:
        check_scheme(labels)
        assemblable = True
    except ValueError:  # a binary scheme: no karyotype to assemble, every crop is audited alone
        assemblable = False
    if celled and assemblable:
        rows = np.array(celled)
        readings = read_cells([samples[i] for i in celled], probs[rows], labels,
                              sizes=None if sizes is None else np.asarray(sizes)[rows], size_prior=size_prior)
        sized[rows] = readings.sized
        assembled[rows] = readings.assembled(labels)
    else:
        celled = []
    floor = 1e-12
    evidence = (np.log(np.maximum(sized[np.arange(len(samples)), np.maximum(assembled, 0)], floor))
                - np.log(np.maximum(sized[np.arange(len(samples)), given], floor)))
    disputed = (assembled >= 0) & (assembled != given)
    by_cell: dict[str, list[DisputedCrop]] = defaultdict(list)
    alone: list[DisputedCrop] = []
    in_cell = np.zeros(len(samples), dtype=bool)
    in_cell[celled] = True
    for row in np.flatnonzero(disputed & (evidence > 0)):
        sample = samples[row]
        crop = DisputedCrop(str(sample.path), sample.cell_key if in_cell[row] else "", sample.case, sample.label,
                            labels.labels[assembled[row]], float(evidence[row]),
                            turned=bool(turned[row]) if turned is not None else False)
        (by_cell[crop.cell] if in_cell[row] else alone).append(crop)
    findings = [f for crops in by_cell.values() for f in group_disputes(crops)]
    findings += [Finding("single", c.cell, (c,)) for c in alone]
    threshold = math.log(min_odds)
    findings = sorted((f for f in findings if f.evidence >= threshold), key=lambda f: (-f.evidence, f.cell))
    return LabelAudit(findings, len(samples), len({samples[i].cell_key for i in celled}), int(disputed.sum()),
                      float(min_odds))


def chromosome_rank(label: str) -> int:
    """Place of a label's chromosome in the karyogram order 1..22, X, Y (a variant counts as its parent)."""
    return NORMAL24.index(chromosome_of(label))


def group_disputes(crops: list[DisputedCrop]) -> list[Finding]:
    """One cell's disputed crops as findings: the largest group slipped by one offset (a shift, when
    it has at least SHIFT_MIN_CROPS), then exchanged pairs, then the rest one by one."""
    cell = crops[0].cell if crops else ""
    remaining = sorted(crops, key=lambda c: (chromosome_rank(c.label), c.path))
    findings: list[Finding] = []
    by_offset: dict[int, list[DisputedCrop]] = defaultdict(list)
    for crop in remaining:
        offset = chromosome_rank(crop.label) - chromosome_rank(crop.suggested)
        if offset:
            by_offset[offset].append(crop)
    if by_offset:
        offset, members = max(by_offset.items(), key=lambda item: (len(item[1]), sum(c.evidence for c in item[1])))
        if len(members) >= SHIFT_MIN_CROPS:
            findings.append(Finding("shift", cell, tuple(members), offset))
            remaining = [c for c in remaining if c not in members]
    while remaining:
        crop = remaining.pop(0)
        partner = next((c for c in remaining if c.label == crop.suggested and c.suggested == crop.label), None)
        if partner is not None:
            remaining.remove(partner)
            findings.append(Finding("exchange", cell, (crop, partner)))
        else:
            findings.append(Finding("single", cell, (crop,)))
    return findings


def _odds(evidence: float) -> float:
    """e**evidence, capped so JSON never carries infinity (1e9:1 is as sure as a float model gets)."""
    return float(min(math.exp(min(evidence, 50.0)), 1e9))
