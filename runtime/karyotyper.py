"""Karyotype cells from inside a scanner application: one object from a bundle to a cell's ISCN call.

The scanner's own software cuts the chromosomes out of a metaphase and holds them as arrays; it
wants the cell's call, the crops to review and the patient's karyotype, without writing PNGs for a
command line to read back. Getting that right takes more than a classifier: each crop's size is
measured against the rest of its cell and weighed in with the bundle's size prior, specks are kept
out of the count, the cell is assembled under the count priors of the lab's work (constitutional
or not), and a cell whose crops seem not to stand p arm up is named. `karyo karyotype` is this
object plus files and printing, so a call made here is the call the command line makes of the
same crops (a test holds them equal).

Thread-safe like `Classifier`: cells may be read from several worker threads with one Karyotyper.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

import numpy as np

from .assembly import CONSTITUTIONAL_TRISOMIES, DEFAULT_TRISOMIES, TRISOMY_COSTS, AssemblyPriors, check_scheme
from .bundle import Bundle
from .case_summary import CaseSummary, CellCall, summarize_case
from .cell_size import sizes_array
from .karyotype import KaryotypeCall, karyotype_cell
from .labels import parse_label
from .preprocess import ImageError, crop_as_read

if TYPE_CHECKING:  # onnxruntime loads with the first Karyotyper, not with this module
    from .classifier import Classifier, Prediction

Crop = Union[str, Path, np.ndarray]


@dataclass
class CellResult:
    """One cell read and called. `call` is None when none of its crops could be read.

    `predictions` holds every crop given, in order, unreadable ones with their `error`; the call's
    assignments are in the order of the readable ones (`readable`), so `call.assignments[k]` is the
    crop `readable[k]`. `crops` keeps what was given (paths or the caller's arrays, not copies) for
    drawing the karyogram. `corrections`: crops a person labelled on review (`Karyotyper.correct`)."""

    name: str
    call: KaryotypeCall | None
    predictions: list[Prediction]
    orientation_hint: str | None = None
    crops: list[Crop] = field(default_factory=list, repr=False)
    corrections: dict[int, str] = field(default_factory=dict)  # assignment index -> the label a person set

    @property
    def readable(self) -> list[Prediction]:
        return [p for p in self.predictions if _readable(p)]

    @property
    def errors(self) -> list[Prediction]:
        return [p for p in self.predictions if not _readable(p)]

    @property
    def karyotype(self) -> str | None:
        return None if self.call is None else self.call.karyotype

    @property
    def review(self) -> int:
        """How many crops a person should look at before the call is signed out."""
        return 0 if self.call is None else sum(a.review for a in self.call.assignments)

    def cell_call(self) -> CellCall | None:
        """What the patient's summary needs of this cell (None: nothing to count)."""
        return None if self.call is None else CellCall.of(self.name, self.call)

    def to_dict(self) -> dict[str, Any]:
        """The cell as `karyo karyotype --json` writes it (less truth and karyogram, which are the
        command line's): crops named by path, a swap partner by its partner's path."""
        errors = [{"path": p.path, "error": error_text(p)} for p in self.errors]
        if self.call is None:
            return {"cell": self.name, "karyotype": None, "count": 0, "assignments": [], "findings": [], "errors": errors}
        entry: dict[str, Any] = {
            "cell": self.name, "karyotype": self.call.karyotype, "count": self.call.count, "complete": self.call.complete,
            "assignments": assignment_rows(self.call, [p.turned for p in self.readable]),
            "findings": self.call.findings, "errors": errors,
        }
        if self.orientation_hint is not None:
            entry["orientation_hint"] = self.orientation_hint
        return entry


def _readable(prediction: Prediction) -> bool:
    """Whether a crop was read (the one test for `readable`, `errors` and the call's rows)."""
    return prediction.error is None and prediction.probs is not None


def error_text(prediction: Prediction) -> str:
    """An unreadable crop's one line, naming it once."""
    message = str(prediction.error or "no probabilities returned")
    return message if prediction.path is None or str(prediction.path) in message else f"{prediction.path}: {message}"


def assignment_rows(call: KaryotypeCall, turned: list[bool] | None = None) -> list[dict[str, Any]]:
    """The JSON view of a call's crops; `swap_with` names the other crop by its path, as the user knows it.

    `turned` (per crop, in the cell's order) says which crops stood upside down under `--orientation
    any` (their read turned half a circle was the clearer), so a reviewer who opens the crop file
    knows it lies the other way up from the karyogram. `corrected`: a person labelled the crop on review."""
    return [
        {"path": a.path, "label": a.label, "probability": a.probability, "review": a.review, "fragment": a.fragment,
         "swap_with": None if a.swap_with is None else call.assignments[a.swap_with].path,
         "alternative": a.alternative, "joined": a.joined, "turned": bool(turned[a.index]) if turned is not None else False,
         "corrected": a.corrected}
        for a in call.assignments
    ]


class Karyotyper:
    """A bundle ready to call cells: its classifier, its size prior and the lab's count priors.

    `trisomies` is the lab's work (``karyo.runtime.assembly.TRISOMY_COSTS``): "viable" for blood and
    amniotic fluid (the default), "any" for marrow, tumours and miscarriages; it also decides
    whether a patient's several lines are written as a constitutional mosaic (``mos``). `priors`
    replaces the count priors altogether (review odds included); the other arguments are
    `Classifier`'s, and an open `Classifier` may be given instead of a bundle (its precision,
    provider and orientation then stand). A bundle without a karyotype (a binary scheme) is refused
    here, before any crop is read."""

    def __init__(
        self,
        bundle: Bundle | str | Path | "Classifier",
        precision: str = "auto",
        provider: str = "auto",
        orientation: str | None = None,
        trisomies: str = DEFAULT_TRISOMIES,
        priors: AssemblyPriors | None = None,
        threads: int | None = None,
        workers: int | None = None,
    ) -> None:
        if trisomies not in TRISOMY_COSTS:
            raise ValueError(f"trisomies {trisomies!r}: use one of {', '.join(TRISOMY_COSTS)}")
        self.trisomies = trisomies
        self.priors = priors if priors is not None else AssemblyPriors.for_trisomies(trisomies)
        from .classifier import Classifier

        if isinstance(bundle, Classifier):
            self.classifier = bundle
        else:
            self.classifier = Classifier(bundle, precision=precision, provider=provider, threads=threads,
                                         workers=workers, orientation=orientation)
        check_scheme(self.classifier.labels)

    @property
    def constitutional(self) -> bool:
        return self.trisomies == CONSTITUTIONAL_TRISOMIES

    def describe(self) -> dict[str, Any]:
        """What read the cells (provider, precision and why, orientation) and under which priors."""
        return {**self.classifier.describe(), "trisomies": self.trisomies}

    def read_cell(self, crops: Sequence[Crop], name: str = "cell", names: Sequence[str | None] | None = None) -> CellResult:
        """Classify one cell's crops (files or arrays: gray or colour, 8 or 16 bit, any size) and call it.

        A crop that cannot be read (corrupt, blank, bright on a dark ground) is left out of the cell
        with its error in `predictions`; the cell is called without it. `names` name the crops in
        the call's assignments and in errors (default: a file's path; an array is named by its
        place, `image K`, in errors only, as `Classifier.predict_arrays` names it)."""
        crops = list(crops)
        predictions, hint = self.classifier.predict_cell(crops, names=names)
        readable = [p for p in predictions if _readable(p)]
        if not readable:
            return CellResult(name, None, predictions, None, crops)
        return CellResult(name, self._call(readable), predictions, hint, crops)

    def _call(self, readable: list[Prediction], pinned: Mapping[int, str] | None = None) -> KaryotypeCall:
        """The readable crops' call: their sizes in the cell and the bundle's size prior weighed in."""
        return karyotype_cell(np.stack([p.probs for p in readable]), self.classifier.labels, self.priors,
                              paths=[p.path for p in readable], sizes=sizes_array([p.size for p in readable]),
                              size_prior=self.classifier.size_prior, pinned=pinned)

    def correct(self, cell: CellResult, labels: Mapping[int | str, str]) -> CellResult:
        """The cell called again with crops a person has labelled on review, the rest of the cell
        assembled around them: setting one crop of a swapped 4 and 5 right moves its partner, and a
        speck set to a 13 is counted. Crops are named by their place in `cell.call.assignments` or
        by name (a file's path); labels as a folder would name them ("23" is X). Earlier
        corrections of the cell stand unless set again. No crop is read again."""
        if cell.call is None:
            raise ValueError(f"{cell.name}: no readable crops to correct")
        readable = cell.readable
        by_name = {str(p.path): k for k, p in enumerate(readable) if p.path is not None}
        scheme = self.classifier.labels
        corrections = dict(cell.corrections)
        for crop, given in labels.items():
            k = int(crop) if isinstance(crop, (int, np.integer)) else by_name.get(str(crop))
            if k is None or not 0 <= k < len(readable):
                raise ValueError(f"{cell.name}: no crop {crop!r} among its {len(readable)} readable crops")
            label = parse_label(str(given))
            if label is None or label not in scheme:
                raise ValueError(f"{cell.name}: {given!r} is not a label of scheme {scheme.name}")
            corrections[k] = label
        return replace(cell, call=self._call(readable, corrections), corrections=corrections)

    def summarize(self, case: str, cells: Sequence[CellResult]) -> CaseSummary:
        """One patient's karyotype from its cells, with cell counts and ISCN's clone rule
        (``karyo.runtime.case_summary``); cells with no readable crop take no part."""
        calls = [cell.cell_call() for cell in cells]
        return summarize_case(case, [c for c in calls if c is not None], self.constitutional)

    def karyogram(self, cell: CellResult, path: str | Path) -> Path:
        """Draw the cell's karyogram PNG (atomically): crops in their pairs, those to review boxed in
        red with what to check them against; a crop read turned stands p arm up like the others; the
        call as title and the cell's name under it."""
        from .karyogram import draw_karyogram

        if cell.call is None:
            raise ValueError(f"{cell.name}: no readable crops, no karyogram")
        spec = self.classifier.spec
        shown, assignments = [], []
        readable = [(k, p) for k, p in enumerate(cell.predictions) if _readable(p)]
        for (k, prediction), assignment in zip(readable, cell.call.assignments):
            try:
                shown.append(crop_as_read(cell.crops[k], spec, prediction.turned))
            except ImageError:  # read a moment ago, so only a file changed underneath lands here
                continue
            assignments.append(assignment)
        return draw_karyogram(shown, assignments, path, cell.call.karyotype, subtitle=cell.name)

    def close(self) -> None:
        self.classifier.close()

    def __enter__(self) -> Karyotyper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["CellResult", "Karyotyper", "assignment_rows", "error_text"]
