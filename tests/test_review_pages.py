"""The pages a reviewer opens: a patient's cells with their calls, crops to check and karyograms, and
the list of patients, all plain files whose links lead somewhere."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from karyo.runtime.review_pages import CASE_PAGE, CASES_CSV, INDEX_PAGE, case_page, index_page
from karyo.runtime.watch import CASE_RESULT, RELABEL_FILE, CellWatcher
from test_karyotyper import cell_arrays, sized_bundle, write_cell  # noqa: F401 - the fixture is used by name
from test_watch import MALE, age, karyotyper  # noqa: F401 - the fixture is used by name


class _Links(HTMLParser):
    """The links and pictures of a page, and the ids they can point at."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        if tag in ("a", "img") and (values.get("href") or values.get("src")):
            self.targets.append(values.get("href") or values.get("src"))


def broken_links(page: Path) -> list[str]:
    """What on the page leads nowhere: a file that is not there, or an anchor with no id."""
    parser = _Links()
    parser.feed(page.read_text())
    broken = []
    for target in parser.targets:
        parts = urlsplit(target)
        if parts.path:
            if not (page.parent / unquote(parts.path)).is_file():
                broken.append(target)
        elif parts.fragment not in parser.ids:
            broken.append(target)
    return broken


def _row(path: str, label: str, p: float, **flags) -> dict:
    return {"path": path, "label": label, "probability": p, "review": False, "fragment": False, "swap_with": None,
            "alternative": None, "joined": False, "turned": False, "corrected": False, **flags}


def test_a_case_page_names_what_to_check_and_where_a_correction_goes(tmp_path):
    out, case = tmp_path / "out", "P<7>&Q"
    source = "/scanner/P<7>&Q/c1"
    swapped = {"cell": f"{case}/c1", "karyotype": "46,XY", "count": 46, "complete": True, "findings": [],
               "errors": [], "case": case, "called_at": "2026-11-25T10:00:00+00:00", "precision": "int8",
               "provider": "cpu", "karyogram": "karyogram.png", "source": {"folder": source, "signature": "ab" * 32},
               "assignments": [_row(f"{source}/00.png", "1", 0.99),
                               _row(f"{source}/05.png", "4", 0.41, review=True, alternative="5",
                                    swap_with=f"{source}/09.png"),
                               _row(f"{source}/09.png", "5", 0.38, review=True, alternative="4",
                                    swap_with=f"{source}/05.png"),
                               _row(f"{source}/11.png", "13", 1.0, corrected=True),
                               _row(f"{source}/12.png", "21", 0.62, review=True, fragment=True)]}
    unread = {"cell": f"{case}/c2", "karyotype": None, "count": 0, "assignments": [], "findings": [],
              "errors": [{"path": "/scanner/c2/00.png", "error": "/scanner/c2/00.png: cannot decode"}], "case": case}
    document = {"case": case, "karyotype": "46,XY[1]", "counted": 1, "review_cells": 1,
                "notes": ["fewer cells than the 20 of a routine count"], "updated_at": "2026-11-25T10:00:01+00:00"}
    page = case_page(document, [swapped, unread], out / case, out)
    assert "P<7>" not in page and "<h1>Patient P&lt;7&gt;&amp;Q</h1>" in page
    assert '<p class="call">46,XY[1]</p>' in page and "<li>fewer cells than the 20 of a routine count</li>" in page
    # the exchange: both crops in the table, each with its partner, and the two lines that would set them
    assert "<td>05.png</td><td>4</td><td>0.41</td><td>5</td><td>09.png</td>" in page
    assert "<td>09.png</td><td>5</td><td>0.38</td><td>4</td><td>05.png</td>" in page
    # where to write a correction, and no label filled in for the reviewer to copy unread
    assert f"<code>05.png=LABEL</code>, one crop a line, into <code>{'/scanner/P&lt;7&gt;&amp;Q/c1/' + RELABEL_FILE}</code>" in page
    assert "05.png=5" not in page and "09.png=4" not in page
    assert "46 crops" not in page  # counted from the rows the JSON holds, not made up
    assert "<td>12.png</td><td>not counted (reads 21)</td><td>0.62</td>" in page  # a speck placed as no chromosome
    assert "<td>5 crops, 1 relabelled, 3 to review</td>" in page
    assert '<img src="c1/karyogram.png?v=abababababab"' in page and "<h2>cell c1: 46,XY</h2>" in page
    # a cell with nothing readable: shaded in the table, its error on the page, no picture
    assert '<tr class=look><td><a href="#cell-P%3C7%3E%26Q%2Fc2">c2</a></td><td>no call</td>' in page
    assert "/scanner/c2/00.png: cannot decode" in page and "c2/karyogram.png" not in page


def test_the_patient_list_shades_what_a_lab_reads_first():
    rows = [{"case": name, "karyotype": karyotype, "cells_called": 2, "counted": 2, "nonclonal_cells": nonclonal,
             "review_cells": review, "incomplete": 0, "notes": "", "updated_at": f"2026-11-25T10:0{k}:00+00:00",
             "page": f"{name}/{CASE_PAGE}"}
            for k, (name, karyotype, nonclonal, review) in enumerate(
                [("A", "46,XX[2]", 0, 0), ("B", "46,XY[2]", 0, 1), ("C", "mos 47,XY,+21[2]/46,XY[3]", 0, 0), ("D", "", 0, 0),
                 ("E", "46,XY[1]", 1, 0)])]
    page = index_page(rows)
    order = [page.index(f">{name}</a>") for name in "EDCBA"]
    assert order == sorted(order)  # newest first
    shaded = {name: f'<tr class=look><td><a href="{name}/case.html">{name}</a>' in page for name in "ABCDE"}
    assert shaded == {"A": False, "B": True, "C": True, "D": True, "E": True}
    assert "no karyotype" in page and 'http-equiv="refresh"' in page


def test_the_watcher_keeps_the_pages_and_the_list_with_its_results_across_restarts(karyotyper, tmp_path):  # noqa: F811
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    write_cell(inbox / "P1" / "c1", cell_arrays(MALE, seed=1))
    write_cell(inbox / "P1" / "c2", cell_arrays(MALE + ["21"], seed=2))
    write_cell(inbox / "lone", cell_arrays(MALE, seed=3))
    for cell in ("P1/c1", "P1/c2", "lone"):
        age(inbox / cell, 10)
    watcher = CellWatcher(karyotyper, inbox, out, settle_s=5.0)
    assert watcher.write_pages() == [out / CASES_CSV, out / INDEX_PAGE]  # before anything: an empty list to open
    events = {e.cell.key: e for e in watcher.poll()}
    assert out / "P1" / CASE_PAGE in events["P1/c2"].written and out / INDEX_PAGE in events["lone"].written
    case = json.loads((out / "P1" / CASE_RESULT).read_text())
    page = (out / "P1" / CASE_PAGE).read_text()
    assert case["karyotype"] == "46,XY[1]" and '<p class="call">46,XY[1]</p>' in page
    assert "<h2>cell c1: 46,XY</h2>" in page and "<h2>cell c2: 47,XY,+21</h2>" in page
    assert broken_links(out / "P1" / CASE_PAGE) == [] and broken_links(out / INDEX_PAGE) == []
    rows = list(csv.DictReader((out / CASES_CSV).open()))
    assert [(r["case"], r["karyotype"], r["cells_called"], r["counted"], r["nonclonal_cells"]) for r in rows] == [
        ("P1", "46,XY[1]", "2", "2", "1")]
    index = (out / INDEX_PAGE).read_text()
    assert '<tr class=look><td><a href="P1/case.html">P1</a>' in index  # a lone 47,XY,+21 beside the normal line
    assert '<h2>Cells with no patient folder</h2>' in index
    assert '<td><a href="lone/karyotype.json">lone</a></td><td>46,XY</td>' in index
    # a reviewer's relabel: the page follows the new call
    (inbox / "P1" / "c2" / RELABEL_FILE).write_text("46.png=13\n")
    age(inbox / "P1" / "c2", 10)
    assert [e.result.karyotype for e in watcher.poll()] == ["47,XY,+13"]
    assert "<h2>cell c2: 47,XY,+13</h2>" in (out / "P1" / CASE_PAGE).read_text()
    assert "47 crops, 1 relabelled" in (out / "P1" / CASE_PAGE).read_text()
    # a restart (results from before pages, say): the list is read back from disk and a missing page is drawn
    (out / "P1" / CASE_PAGE).unlink()
    (out / INDEX_PAGE).unlink()
    again = CellWatcher(karyotyper, inbox, out, settle_s=5.0)
    assert sorted(again.index.rows) == ["P1"] and sorted(again.index.loose) == ["lone"]
    assert out / "P1" / CASE_PAGE in again.write_pages() and again.poll() == []
    assert "<h2>cell c2: 47,XY,+13</h2>" in (out / "P1" / CASE_PAGE).read_text()
    assert ">P1</a>" in (out / INDEX_PAGE).read_text() and ">lone</a>" in (out / INDEX_PAGE).read_text()
