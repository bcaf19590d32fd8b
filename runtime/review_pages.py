"""What the reviewer at the scanner PC opens: the watcher's results as static pages, one per patient
with every cell's call and karyogram, and a list of patients (``OUT/index.html``, ``OUT/cases.csv``).

Why pages: a cytogeneticist signs out a patient, not a JSON file. They want the patient's karyotype,
each cell's call beside its karyogram, and the crops to check, in one place; a browser is on every
PC. The pages are plain files (no server, no script, nothing fetched), so they open from the results
folder or a share, and are built from the JSON on disk, the watcher's record, so after a restart they
still say what the results say. `cases.csv` is the same list for a LIMS or a spreadsheet.

A cell page tells how to correct it (the cell's `relabel.txt`, which the watcher reads;
``karyo.runtime.watch``) but fills in no label: of the release's 580 flagged crops 510 were placed
right, and the label under a red box was the true one for 48 of the 70 that were not
(benchmarks/ACCURACY.md), so a block of ready lines copied unread would put far more crops wrong
than right. Each crop is the reviewer's call.
"""

from __future__ import annotations

import csv
import io
import json
import os
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .bundle import atomic_write_text

CASE_PAGE = "case.html"
INDEX_PAGE = "index.html"
CASES_CSV = "cases.csv"
CASE_COLUMNS = ("case", "karyotype", "cells_called", "counted", "nonclonal_cells", "review_cells", "incomplete", "notes",
                "updated_at", "page")
INDEX_REFRESH_S = 30  # the list is left open beside the scanner; it shows new patients without a click

_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.2em .6em;text-align:left}
th{background:#eee}.call{font-size:1.6em;font-weight:bold}.look{background:#fff3d6}
.error{color:#a00}img{max-width:100%;border:1px solid #ccc}pre{background:#f4f4f4;padding:.5em}
section{margin-top:2em;border-top:2px solid #ddd}"""


def _href(path: str) -> str:
    return quote(path.replace(os.sep, "/"))


def _page(title: str, body: list[str], refresh_s: int | None = None) -> str:
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8">{refresh}<title>{escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _table(header: tuple[str, ...], rows: list[tuple[list[str], bool]]) -> str:
    """Cells are HTML already; a row marked True is one to look at."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(f'<tr{" class=look" if look else ""}>' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
                   for cells, look in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _anchor(cell: str) -> str:
    return "cell-" + quote(cell, safe="")


def _crop(path: str | None) -> str:
    return Path(path).name if path else "?"


def _flagged(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for row in entry.get("assignments", []) if row.get("review")]


def _placed(row: dict[str, Any]) -> str:
    """Where the cell's call put a crop: a fragment (too small for a whole chromosome) is not counted."""
    if row.get("fragment"):
        return f"not counted (reads {escape(row['label'])})"
    return escape(row["label"])


def _cell_summary(entry: dict[str, Any]) -> str:
    """The cell's crops in words, as the plain line of `karyo karyotype` counts them."""
    rows = entry.get("assignments", [])
    parts = [f"{len(rows)} crops"]
    for key, words in (("turned", "read turned"), ("corrected", "relabelled"), ("review", "to review")):
        n = sum(bool(row.get(key)) for row in rows)
        if n:
            parts.append(f"{n} {words}")
    if entry.get("errors"):
        parts.append(f"{len(entry['errors'])} unreadable or not used")
    return ", ".join(parts)


def cell_section(entry: dict[str, Any], case_folder: Path, out: Path) -> str:
    """One cell on its patient's page: call, what to look at, the relabel lines, the karyogram."""
    name, call = entry["cell"], entry.get("karyotype")
    folder = os.path.relpath(out / name, case_folder)  # the cell as the patient's page names it: "12", not "P17/12"
    lines = [f'<section id="{_anchor(name)}"><h2>cell {escape(folder)}: {escape(call or "no call")}</h2>',
             f"<p>{escape(_cell_summary(entry))}. Called {escape(str(entry.get('called_at', '')))} "
             f"({escape(str(entry.get('precision', '')))} on {escape(str(entry.get('provider', '')))}).</p>"]
    if entry.get("findings"):
        lines.append("<ul>" + "".join(f"<li>{escape(f)}</li>" for f in entry["findings"]) + "</ul>")
    if entry.get("orientation_hint"):
        lines.append(f'<p class="error">warning: {escape(entry["orientation_hint"])}</p>')
    for error in entry.get("errors", []):
        lines.append(f'<p class="error">{escape(str(error.get("error", error)))}</p>')
    flagged = _flagged(entry)
    if flagged:
        rows = [([escape(_crop(r["path"])), _placed(r), f"{r['probability']:.2f}", escape(r.get("alternative") or ""),
                  escape(_crop(r["swap_with"]) if r.get("swap_with") else "")], True) for r in flagged]
        lines.append(_table(("crop", "placed as", "probability of that", "written under its box", "exchange with"), rows))
        source = entry.get("source", {}).get("folder")
        if source:  # no line filled in for the reviewer: most flagged crops are placed right (module docstring)
            lines.append(f"<p>A flag says look, not that the label under the box is right. To set a crop, write "
                         f"<code>{escape(_crop(flagged[0]['path']))}=LABEL</code>, one crop a line, into "
                         f"<code>{escape(str(Path(source) / 'relabel.txt'))}</code>: the cell is called again "
                         f"around the labels you set.</p>")
    if entry.get("karyogram"):
        version = quote(str(entry.get("source", {}).get("signature", ""))[:12])  # a new call is not the cached picture
        src = f"{_href(os.path.join(folder, entry['karyogram']))}?v={version}"
        lines.append(f'<p><img src="{src}" alt="karyogram of cell {escape(folder)}"></p>')
    lines.append(f'<p><a href="{_href(os.path.join(folder, "karyotype.json"))}">karyotype.json</a></p></section>')
    return "\n".join(lines)


def case_page(case_doc: dict[str, Any], entries: list[dict[str, Any]], case_folder: Path, out: Path) -> str:
    """A patient's page: the karyotype with its cell counts and notes, a row per cell, then each cell."""
    case = case_doc["case"]
    body = [f"<p><a href=\"{_href(os.path.relpath(out / INDEX_PAGE, case_folder))}\">all patients</a></p>",
            f"<h1>Patient {escape(case)}</h1>",
            f'<p class="call">{escape(case_doc.get("karyotype") or "no karyotype")}</p>',
            f"<p>{case_doc.get('counted', 0)} cells counted, {case_doc.get('review_cells', 0)} of them with crops to "
            f"review; updated {escape(str(case_doc.get('updated_at', '')))}.</p>"]
    if case_doc.get("notes"):
        body.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in case_doc["notes"]) + "</ul>")
    rows = [([f'<a href="#{_anchor(e["cell"])}">{escape(os.path.relpath(out / e["cell"], case_folder))}</a>',
              escape(e.get("karyotype") or "no call"), escape(_cell_summary(e))], _cell_needs_a_look(e)) for e in entries]
    body.append(_table(("cell", "call", "crops"), rows))
    body += [cell_section(entry, case_folder, out) for entry in entries]
    return _page(f"{case}: {case_doc.get('karyotype') or 'no karyotype'}", body)


def write_case_page(out: Path, case_doc: dict[str, Any], entries: list[dict[str, Any]]) -> Path:
    case_folder = out / case_doc["case"]
    return atomic_write_text(case_folder / CASE_PAGE, case_page(case_doc, entries, case_folder, out))


def case_row(case_doc: dict[str, Any]) -> dict[str, Any]:
    """A patient's row in the list (and in cases.csv), from its case.json."""
    return {"case": case_doc["case"], "karyotype": case_doc.get("karyotype") or "",
            "cells_called": len(case_doc.get("cells_called", [])), "counted": case_doc.get("counted", 0),
            "nonclonal_cells": sum(len(line.get("cells", [])) for line in case_doc.get("nonclonal", [])),
            "review_cells": case_doc.get("review_cells", 0), "incomplete": len(case_doc.get("incomplete", [])),
            "notes": "; ".join(case_doc.get("notes", [])), "updated_at": case_doc.get("updated_at", ""),
            "page": f"{case_doc['case']}/{CASE_PAGE}"}


def _needs_a_look(row: dict[str, Any]) -> bool:
    """No karyotype, an abnormal or mosaic one, counted cells outside it (a lone trisomic cell beside
    a normal line: count more cells), or crops to review: the rows a lab reads first."""
    karyotype = row["karyotype"]
    normal = karyotype.split("[")[0] in ("46,XX", "46,XY") and "/" not in karyotype
    return not normal or bool(row["nonclonal_cells"]) or bool(row["review_cells"])


def index_page(rows: list[dict[str, Any]], loose: list[dict[str, Any]] | None = None) -> str:
    ordered = sorted(rows, key=lambda r: (r["updated_at"], r["case"]), reverse=True)
    table = _table(("patient", "karyotype", "cells called", "counted", "outside the karyotype", "with crops to review",
                    "incomplete", "notes", "updated"),
                   [([f'<a href="{_href(r["page"])}">{escape(r["case"])}</a>', escape(r["karyotype"] or "no karyotype"),
                      str(r["cells_called"]), str(r["counted"]), str(r["nonclonal_cells"]), str(r["review_cells"]),
                      str(r["incomplete"]),
                      escape(r["notes"]), escape(r["updated_at"])], _needs_a_look(r)) for r in ordered])
    body = ["<h1>Patients called</h1>",
            f"<p>{len(rows)} patients, newest first; shaded: no karyotype, not 46,XX or 46,XY, counted cells "
            "outside the karyotype (non-clonal), or crops to review. "
            f"This page reloads every {INDEX_REFRESH_S} s.</p>", table]
    if loose:
        cells = sorted(loose, key=lambda r: (r["called_at"], r["cell"]), reverse=True)
        body += ["<h2>Cells with no patient folder</h2>",
                 _table(("cell", "call", "crops", "called", "karyogram"),
                        [([f'<a href="{_href(r["cell"] + "/karyotype.json")}">{escape(r["cell"])}</a>',
                           escape(r["karyotype"] or "no call"), escape(r["crops"]),
                           escape(r["called_at"]),
                           f'<a href="{_href(r["cell"] + "/" + r["karyogram"])}">karyogram</a>' if r["karyogram"] else ""],
                          r["look"]) for r in cells])]
    return _page("karyo: patients called", body, refresh_s=INDEX_REFRESH_S)


def cases_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CASE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r["case"]):
        writer.writerow(row)
    return buffer.getvalue()


def loose_row(entry: dict[str, Any]) -> dict[str, Any]:
    """A cell with no patient folder above it (INBOX/CELL/*.png), listed on its own."""
    return {"cell": entry["cell"], "karyotype": entry.get("karyotype") or "", "crops": _cell_summary(entry),
            "called_at": entry.get("called_at", ""), "karyogram": entry.get("karyogram"),
            "look": _cell_needs_a_look(entry)}


def _cell_needs_a_look(entry: dict[str, Any]) -> bool:
    """Crops to review, crops that could not be used, or no call at all."""
    return bool(_flagged(entry) or entry.get("errors") or entry.get("karyotype") is None)


class PatientIndex:
    """The list of patients (and of cells with no patient folder) under a results folder, kept in
    memory and written after each change; read from the results on disk when the watcher starts,
    so a restart keeps the list."""

    def __init__(self, out: Path, case_file: str = "case.json", cell_file: str = "karyotype.json") -> None:
        self.out = Path(out)
        self.rows: dict[str, dict[str, Any]] = {}
        self.loose: dict[str, dict[str, Any]] = {}
        if not self.out.is_dir():
            return
        for path in sorted(self.out.rglob(case_file)):
            document = _read_json(path)
            if document is not None and isinstance(document.get("case"), str):
                self.rows[document["case"]] = case_row(document)
        for path in sorted(self.out.glob(f"*/{cell_file}")):  # a cell with no patient sits one level down
            entry = _read_json(path)
            if entry is not None and entry.get("case") is None and isinstance(entry.get("cell"), str):
                self.loose[entry["cell"]] = loose_row(entry)

    def update(self, case_doc: dict[str, Any]) -> list[Path]:
        self.rows[case_doc["case"]] = case_row(case_doc)
        return self.write()

    def update_loose(self, entry: dict[str, Any]) -> list[Path]:
        self.loose[entry["cell"]] = loose_row(entry)
        return self.write()

    def write(self) -> list[Path]:
        rows = list(self.rows.values())
        return [atomic_write_text(self.out / CASES_CSV, cases_csv(rows)),
                atomic_write_text(self.out / INDEX_PAGE, index_page(rows, list(self.loose.values())))]


def _read_json(path: Path) -> dict[str, Any] | None:
    """A results file, or None when it is not one of ours (left out of the list, not a reason to stop)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


__all__ = ["CASES_CSV", "CASE_PAGE", "INDEX_PAGE", "PatientIndex", "case_page", "case_row", "cases_csv", "index_page",
           "loose_row", "write_case_page"]
