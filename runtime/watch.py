"""Watch a scanner's export folder and call each cell as it lands: the runtime left running on the
scanner PC, with no command to type per cell.

The scanner's software writes each metaphase's crops into a folder of its own, usually under a
folder for the patient (INBOX/PATIENT/CELL/*.png). What a watcher must never do: read a cell
half-written, lose a cell because one crop is corrupt, call the same cell again after a restart,
or stop because one cell failed. So:

- A cell is a folder under the inbox that holds image files itself (hidden files and folders are
  skipped, as are files of other kinds); the folder above it, if it is under the inbox, is its
  patient. Images lying in the inbox itself belong to no cell.
- A cell is ready once nothing in it has changed for `settle_s` seconds (the modification times of
  its crops and of the folder, which changes when a file is added, removed or renamed), or, with
  `ready_file`, once that file is in it, for scanners that write one when a cell is done. Its crops
  are listed again after they are read; a cell that changed meanwhile is left for a later look.
- OUT/<cell path>/karyotype.json is the cell as `karyo karyotype --json` writes it, with where it
  came from and what called it; karyogram.png beside it; OUT/<patient>/case.json the patient's
  karyotype from every cell of theirs called so far (``karyo.runtime.case_summary``). Each file is
  written atomically and the cell's JSON last, so whoever finds it finds the rest.
- The JSON keeps a signature of the crops it called (names, sizes, modification times): after a
  restart a cell already called is left alone, and one whose crops changed since is called again.
  A cell that could not be written is not tried again until its crops change (or the next start).
- Review: a `relabel.txt` in the cell's folder, one `CROP=LABEL` a line (the crop's file name, a
  label as folders name them), holds what a reviewer read crops as. It is part of the signature, so
  writing it calls the cell again with those crops pinned and the rest assembled around them
  (``Karyotyper.correct``): the results and the patient's karyotype follow the reviewer, and the
  karyogram boxes the crops they set in blue. A line that names no crop or no label is an error in
  the cell's results; the other lines stand.
- For people: OUT/<patient>/case.html, the patient's karyotype with every cell's call, crops to
  check and karyogram, and OUT/index.html (with OUT/cases.csv) listing the patients, newest first
  (``karyo.runtime.review_pages``); rewritten with the patient's case.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .bundle import atomic_write_text, sha256_file
from .case_summary import CaseSummary, CellCall, summarize_case
from .labels import parse_label
from .preprocess import IMAGE_SUFFIXES
from .review_pages import CASE_PAGE, PatientIndex, write_case_page

if TYPE_CHECKING:  # the watcher is handed an open Karyotyper; onnxruntime loads with that
    from .karyotyper import CellResult, Karyotyper

CELL_RESULT = "karyotype.json"
KARYOGRAM = "karyogram.png"
CASE_RESULT = "case.json"
RELABEL_FILE = "relabel.txt"
DEFAULT_SETTLE_S = 5.0


@dataclass(frozen=True)
class CellFolder:
    """One cell's folder as it stands at one look."""

    folder: Path
    key: str  # its path under the inbox, "P17/cell3": how the cell is named everywhere
    case: str | None  # the folder above it under the inbox ("P17"), None for a folder at the top
    crops: tuple[Path, ...]
    newest: float  # the latest modification time of the folder and its crops (seconds since the epoch)
    signature: str  # of the crops' (and the relabel file's) names, sizes and modification times


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def look_at(folder: Path, inbox: Path) -> CellFolder | None:
    """The cell in `folder` now; None when it holds no crops, or changed while being looked at."""
    try:
        names = sorted(entry.name for entry in os.scandir(folder) if _is_image(entry.name) and entry.is_file())
        if not names:
            return None
        signed = names + ([RELABEL_FILE] if (folder / RELABEL_FILE).is_file() else [])
        stats = [os.stat(folder / name) for name in signed]
        newest = max([os.stat(folder).st_mtime] + [s.st_mtime for s in stats])
    except OSError:  # a file removed between the listing and its stat: the cell is being written
        return None
    digest = hashlib.sha256()
    for name, stat in zip(signed, stats):
        digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    key = folder.relative_to(inbox).as_posix()
    case = folder.parent.relative_to(inbox).as_posix() if folder.parent != inbox else None
    return CellFolder(folder, key, case, tuple(folder / name for name in names), newest, digest.hexdigest())


def scan_inbox(inbox: Path, skip: Path | None = None) -> list[CellFolder]:
    """Every cell under the inbox, in path order; `skip` (the results folder, when it lies inside
    the inbox) is not looked into, or its karyograms would be taken for cells."""
    inbox = Path(inbox)
    skipped = skip.resolve() if skip is not None else None
    cells = []
    for root, folders, _ in os.walk(inbox):
        folders[:] = sorted(f for f in folders if not f.startswith(".")
                            and (skipped is None or (Path(root) / f).resolve() != skipped))
        if Path(root) != inbox:
            cell = look_at(Path(root), inbox)
            if cell is not None:
                cells.append(cell)
    return cells


def is_ready(cell: CellFolder, now: float, settle_s: float, ready_file: str | None = None) -> bool:
    """Whether the scanner is done with the cell: its ready file is there, or nothing in it has
    changed for `settle_s` seconds."""
    if ready_file:
        return (cell.folder / ready_file).is_file()
    return now - cell.newest >= settle_s


def read_relabels(cell: CellFolder) -> tuple[dict[str, str], list[str]]:
    """The reviewer's labels in the cell's relabel file, {crop file name: label as written}, and its
    lines that are not CROP=LABEL; none without the file."""
    path = cell.folder / RELABEL_FILE
    if not path.is_file():
        return {}, []
    wanted, problems = {}, []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        crop, sep, label = text.rpartition("=")
        if not sep or not crop.strip() or not label.strip():
            problems.append(f"{path}:{number}: {text!r}: write CROP=LABEL, e.g. 07.png=5")
        else:
            wanted[crop.strip()] = label.strip()
    return wanted, problems


def called_signature(out: Path, key: str) -> str | None:
    """The signature of the crops a cell's results were made from; None when there are none."""
    try:
        return json.loads((out / key / CELL_RESULT).read_text())["source"]["signature"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cell_call_of(entry: dict[str, Any]) -> CellCall | None:
    """A called cell's part in its patient's summary, from its JSON (None: nothing was called)."""
    if entry.get("karyotype") is None:
        return None
    return CellCall.placed(entry["cell"], entry["karyotype"], entry["complete"],
                           [(r["label"], r["fragment"], r["review"]) for r in entry["assignments"]])


@dataclass
class WatchEvent:
    """What one look did with one cell. `status`: "called" (results written), "changed" (it changed
    while being read; left for later) or "failed" (`error` says why; not tried again until it changes)."""

    cell: CellFolder
    status: str
    result: CellResult | None = None
    case: CaseSummary | None = None  # the patient's karyotype with this cell counted
    error: str | None = None
    written: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # relabel-file lines that could not be used


class CellWatcher:
    """Calls the cells of an inbox with one Karyotyper, writing results under `out`; `poll()` is one
    look (the command line calls it every few seconds). `clock` is for tests."""

    def __init__(self, karyotyper: Karyotyper, inbox: str | Path, out: str | Path, settle_s: float = DEFAULT_SETTLE_S,
                 ready_file: str | None = None, karyograms: bool = True, clock: Callable[[], float] = time.time) -> None:
        self.karyotyper = karyotyper
        # absolute, so the crop paths in the results mean the same to whoever reads them, from wherever
        self.inbox, self.out = Path(inbox).absolute(), Path(out).absolute()
        if self.inbox.resolve() == self.out.resolve():
            raise ValueError(f"{self.out}: the results need a folder of their own, not the inbox")
        self.settle_s, self.ready_file, self.karyograms, self.clock = settle_s, ready_file, karyograms, clock
        self._called: dict[str, str | None] = {}  # cell key -> the signature its results on disk were made from
        self._failed: dict[str, str] = {}  # cell key -> the signature that could not be written
        bundle = Path(karyotyper.classifier.bundle.path).absolute()  # which model made each call, as loaded
        self._bundle = {"bundle": str(bundle), "bundle_manifest_sha256": sha256_file(bundle / "manifest.json")}
        self.index = PatientIndex(self.out, CASE_RESULT, CELL_RESULT)

    def write_pages(self) -> list[Path]:
        """The list of patients, and the page of each patient that has none yet (results from before
        pages were written): what the reviewer opens when the watcher starts."""
        written = []
        for case in sorted(self.index.rows):
            if not (self.out / case / CASE_PAGE).is_file():
                try:
                    document = json.loads((self.out / case / CASE_RESULT).read_text())
                except (OSError, ValueError):  # gone or torn since the list was read: its next cell writes it
                    continue
                written.append(write_case_page(self.out, document, self._case_entries(case)))
        return written + self.index.write()

    def cells(self) -> list[CellFolder]:
        return scan_inbox(self.inbox, self.out)

    def is_called(self, cell: CellFolder) -> bool:
        """Whether results for the cell as it stands are on disk (read from there once per cell)."""
        if cell.key not in self._called:
            self._called[cell.key] = called_signature(self.out, cell.key)
        return self._called[cell.key] == cell.signature

    def waiting(self) -> list[CellFolder]:
        """Cells with no results for what they hold now and not failed as they stand: ready or not."""
        return [c for c in self.cells() if not self.is_called(c) and self._failed.get(c.key) != c.signature]

    def ready(self) -> list[CellFolder]:
        """The cells to call now: whole, and not yet called as they stand."""
        now = self.clock()
        return [cell for cell in self.waiting() if is_ready(cell, now, self.settle_s, self.ready_file)]

    def poll(self) -> list[WatchEvent]:
        """Call every cell that is ready."""
        return [self.call(cell) for cell in self.ready()]

    def call(self, cell: CellFolder) -> WatchEvent:
        """Read, call and write one cell; whatever goes wrong stays this cell's (an event, not a raise)."""
        try:
            result = self.karyotyper.read_cell(list(cell.crops), name=cell.key)
            now = look_at(cell.folder, self.inbox)
            if now is None or now.signature != cell.signature:
                return WatchEvent(cell, "changed")
            result, problems = self._relabel(cell, result)
            written, entry = self._write_cell(cell, result, problems)
            summary = None
            if cell.case is not None:
                case_summary, case_files = self._write_case(cell.case)
                written += case_files
                summary = case_summary if entry["karyotype"] is not None else None
            else:
                written += self.index.update_loose(entry)
        except Exception as exc:  # noqa: BLE001 - one cell's failure must not stop the watcher
            self._failed[cell.key] = cell.signature
            return WatchEvent(cell, "failed", error=f"{cell.key}: {type(exc).__name__}: {exc}")
        self._called[cell.key] = cell.signature
        return WatchEvent(cell, "called", result, summary, written=written, problems=problems)

    def _relabel(self, cell: CellFolder, result: CellResult) -> tuple[CellResult, list[str]]:
        """The cell called again around the crops its relabel file sets; what in the file could not be used."""
        wanted, problems = read_relabels(cell)
        if not wanted:
            return result, problems
        if result.call is None:
            return result, problems + [f"{cell.folder / RELABEL_FILE}: no readable crops to relabel"]
        readable = {Path(p.path).name: p.path for p in result.readable if p.path is not None}
        scheme = self.karyotyper.classifier.labels
        pinned = {}
        for crop, label in wanted.items():
            if crop not in readable:
                problems.append(f"{cell.folder / RELABEL_FILE}: {crop} is not a readable crop of the cell")
            elif parse_label(label) not in scheme:
                problems.append(f"{cell.folder / RELABEL_FILE}: {crop}={label}: {label!r} is not a label of scheme {scheme.name}")
            else:
                pinned[readable[crop]] = label
        return (self.karyotyper.correct(result, pinned) if pinned else result), problems

    def _write_cell(self, cell: CellFolder, result: CellResult, problems: list[str]) -> tuple[list[Path], dict[str, Any]]:
        folder = self.out / cell.key
        folder.mkdir(parents=True, exist_ok=True)
        ran = self.karyotyper.describe()
        entry = result.to_dict()
        entry["errors"] += [{"path": str(cell.folder / RELABEL_FILE), "error": problem} for problem in problems]
        entry = {**entry, "case": cell.case,
                 "source": {"folder": str(cell.folder), "crops": len(cell.crops), "signature": cell.signature},
                 "called_at": _now_iso(), **{k: ran[k] for k in ("provider", "precision", "orientation", "trisomies")},
                 **self._bundle}
        written = []
        if self.karyograms and result.call is not None:
            written.append(self.karyotyper.karyogram(result, folder / KARYOGRAM))
            entry["karyogram"] = KARYOGRAM
        written.append(atomic_write_text(folder / CELL_RESULT, json.dumps(entry, indent=2) + "\n"))
        return written, entry

    def _case_entries(self, case: str) -> list[dict[str, Any]]:
        """The results of every cell of the patient on disk, in path order."""
        entries = []
        for path in sorted((self.out / case).glob(f"*/{CELL_RESULT}")):
            try:
                entry = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(entry, dict) and entry.get("case") == case:
                entries.append(entry)
        return entries

    def _write_case(self, case: str) -> tuple[CaseSummary, list[Path]]:
        """The patient's karyotype from the results of every cell of theirs on disk, its page, the list."""
        entries = self._case_entries(case)
        called = [(entry["cell"], cell_call_of(entry)) for entry in entries]
        calls = [call for _, call in called if call is not None]
        summary = summarize_case(case, calls, self.karyotyper.constitutional)
        document = {**summary.to_dict(), "cells_called": [name for name, call in called if call is not None],
                    "updated_at": _now_iso()}
        written = [atomic_write_text(self.out / case / CASE_RESULT, json.dumps(document, indent=2) + "\n"),
                   write_case_page(self.out, document, entries)]
        return summary, written + self.index.update(document)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


__all__ = ["CASE_RESULT", "CELL_RESULT", "KARYOGRAM", "RELABEL_FILE", "CellFolder", "CellWatcher", "WatchEvent", "is_ready", "scan_inbox"]
