"""`karyo watch`: cells found in a scanner's inbox, called once whole, written once, never lost."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from karyo.runtime.bundle import sha256_file
from karyo.runtime.labels import AUTOSOMES
from karyo.runtime.watch import CASE_RESULT, CELL_RESULT, KARYOGRAM, RELABEL_FILE, CellWatcher, is_ready, scan_inbox
from test_karyotyper import cell_arrays, sized_bundle, write_cell  # noqa: F401 - the fixture is used by name

MALE = [c for c in AUTOSOMES for _ in range(2)] + ["X", "Y"]


def age(folder: Path, seconds: float) -> None:
    """Set the folder's and its files' modification times `seconds` into the past."""
    when = os.stat(folder).st_mtime - seconds
    for path in [*folder.iterdir(), folder]:
        os.utime(path, (when, when))


@pytest.fixture()
def karyotyper(sized_bundle):  # noqa: F811
    from karyo.runtime import Karyotyper

    with Karyotyper(sized_bundle, precision="int8", provider="cpu") as opened:
        yield opened


def test_cells_are_the_folders_holding_images_and_their_parent_is_the_patient(tmp_path):
    inbox = tmp_path / "inbox"
    write_cell(inbox / "P1" / "c1", cell_arrays(["1", "2"], seed=0))
    write_cell(inbox / "P1" / "c2", cell_arrays(["3"], seed=0))
    write_cell(inbox / "lone", cell_arrays(["4"], seed=0))
    write_cell(inbox / ".partial" / "c9", cell_arrays(["5"], seed=0))  # hidden: a copy in progress
    (inbox / "P1" / "c1" / "notes.txt").write_text("not a crop")
    (inbox / "P1" / "c1" / ".03.png").write_bytes(b"half a file")
    assert cv2.imwrite(str(inbox / "stray.png"), cell_arrays(["6"], seed=0)[0])  # in the inbox itself: no cell
    write_cell(inbox / "results" / "P1" / "c1", cell_arrays(["7"], seed=0))  # the results folder, inside the inbox
    cells = scan_inbox(inbox, skip=inbox / "results")
    assert [(c.key, c.case, [p.name for p in c.crops]) for c in cells] == [
        ("P1/c1", "P1", ["00.png", "01.png"]), ("P1/c2", "P1", ["00.png"]), ("lone", None, ["00.png"])]
    assert "results/P1/c1" in [c.key for c in scan_inbox(inbox)]
    # the signature follows the crops: a crop rewritten or added changes it, a text file does not
    before = {c.key: c.signature for c in cells}
    (inbox / "P1" / "c2" / "readme.txt").write_text("x")
    assert cv2.imwrite(str(inbox / "P1" / "c1" / "02.png"), cell_arrays(["8"], seed=1)[0])
    after = {c.key: c.signature for c in scan_inbox(inbox, skip=inbox / "results")}
    assert after["P1/c1"] != before["P1/c1"] and after["P1/c2"] == before["P1/c2"] and after["lone"] == before["lone"]


def test_a_cell_is_ready_once_left_alone_or_once_its_ready_file_is_there(tmp_path):
    write_cell(tmp_path / "inbox" / "c1", cell_arrays(["1", "2"], seed=0))
    age(tmp_path / "inbox" / "c1", 3.0)
    cell = scan_inbox(tmp_path / "inbox")[0]
    now = cell.newest + 3.0
    assert not is_ready(cell, now, settle_s=5.0) and is_ready(cell, now, settle_s=2.0)
    assert not is_ready(cell, now + 100, settle_s=5.0, ready_file="DONE")
    (tmp_path / "inbox" / "c1" / "DONE").write_text("")
    assert is_ready(cell, now, settle_s=5.0, ready_file="DONE")


def test_watch_calls_each_cell_once_as_karyotype_would_and_sums_up_the_patient(karyotyper, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    normal = write_cell(inbox / "P1" / "c1", cell_arrays(MALE, seed=1))
    trisomic = write_cell(inbox / "P1" / "c2", cell_arrays(MALE + ["21"], seed=2))
    watcher = CellWatcher(karyotyper, inbox, out, settle_s=5.0)
    assert watcher.poll() == []  # just written: not whole yet as far as anyone can tell
    age(inbox / "P1" / "c1", 10)
    age(inbox / "P1" / "c2", 10)
    events = watcher.poll()
    assert [(e.cell.key, e.status) for e in events] == [("P1/c1", "called"), ("P1/c2", "called")]
    first = json.loads((out / "P1" / "c1" / CELL_RESULT).read_text())
    second = json.loads((out / "P1" / "c2" / CELL_RESULT).read_text())
    # the cell as karyotype --json writes it, crops named by path, plus where it came from
    expected = karyotyper.read_cell([str(p) for p in trisomic], name="P1/c2").to_dict()
    assert {k: second[k] for k in expected} == expected and second["karyotype"] == "47,XY,+21"
    assert first["karyotype"] == "46,XY" and first["case"] == "P1" and first["source"]["crops"] == 46
    assert first["provider"] == "cpu" and first["precision"] == "int8" and first["trisomies"] == "viable"
    assert first["bundle_manifest_sha256"] == sha256_file(karyotyper.classifier.bundle.path / "manifest.json")
    assert cv2.imread(str(out / "P1" / "c1" / KARYOGRAM)) is not None
    # the patient with both cells: each line rests on one cell, neither clonal
    case = json.loads((out / "P1" / CASE_RESULT).read_text())
    summary = karyotyper.summarize("P1", [karyotyper.read_cell([str(p) for p in normal], name="P1/c1"),
                                          karyotyper.read_cell([str(p) for p in trisomic], name="P1/c2")])
    assert {k: case[k] for k in summary.to_dict()} == json.loads(json.dumps(summary.to_dict()))
    assert case["cells_called"] == ["P1/c1", "P1/c2"] and events[1].case.karyotype == summary.karyotype
    assert watcher.poll() == []  # called once
    # a restart finds the results and leaves them; a crop added to one cell calls that cell again
    again = CellWatcher(karyotyper, inbox, out, settle_s=5.0)
    assert again.poll() == [] and again.waiting() == []
    assert cv2.imwrite(str(inbox / "P1" / "c1" / "46.png"), cell_arrays(["21"], seed=5)[0])
    age(inbox / "P1" / "c1", 10)
    assert [(e.cell.key, e.result.karyotype) for e in again.poll()] == [("P1/c1", "47,XY,+21")]
    case = json.loads((out / "P1" / CASE_RESULT).read_text())
    assert case["karyotype"] == "47,XY,+21[2]" and case["counted"] == 2


def test_a_corrupt_crop_or_a_failed_cell_loses_nothing_else(karyotyper, tmp_path, monkeypatch):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    write_cell(inbox / "c1", cell_arrays(MALE, seed=1))
    (inbox / "c1" / "46.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    write_cell(inbox / "c2", cell_arrays(MALE, seed=2))
    write_cell(inbox / "c3", cell_arrays(MALE, seed=3))
    (out / "c2").mkdir(parents=True)
    (out / "c2" / CELL_RESULT).mkdir()  # the results cannot be written where they go
    for cell in ("c1", "c2", "c3"):
        age(inbox / cell, 10)
    watcher = CellWatcher(karyotyper, inbox, out, settle_s=1.0)
    events = {e.cell.key: e for e in watcher.poll()}
    assert events["c1"].status == "called" and events["c1"].result.karyotype == "46,XY"
    assert "46.png" in json.loads((out / "c1" / CELL_RESULT).read_text())["errors"][0]["path"]
    assert events["c2"].status == "failed" and "IsADirectoryError" in events["c2"].error
    assert events["c3"].status == "called" and (out / "c3" / CELL_RESULT).is_file()
    assert watcher.poll() == []  # the failed cell is not tried again as it stands
    assert [c.key for c in watcher.waiting()] == []
    # a cell that changes while its crops are read is not written; it is called once it settles
    write_cell(inbox / "c4", cell_arrays(MALE, seed=4))
    age(inbox / "c4", 10)
    read = karyotyper.read_cell

    def read_while_the_scanner_writes(crops, name, names=None):
        cv2.imwrite(str(inbox / "c4" / "46.png"), cell_arrays(["21"], seed=6)[0])
        return read(crops, name, names)

    monkeypatch.setattr(karyotyper, "read_cell", read_while_the_scanner_writes)
    assert [(e.cell.key, e.status) for e in watcher.poll()] == [("c4", "changed")]
    assert not (out / "c4").exists()
    monkeypatch.setattr(karyotyper, "read_cell", read)
    assert watcher.poll() == []  # changed a moment ago
    age(inbox / "c4", 10)
    assert [(e.cell.key, e.result.karyotype) for e in watcher.poll()] == [("c4", "47,XY,+21")]


def test_cli_once_prints_a_line_per_cell_and_exits_by_what_failed(sized_bundle, tmp_path, monkeypatch):  # noqa: F811
    from karyo.runtime.cli import app

    inbox, out = tmp_path / "inbox", tmp_path / "out"
    write_cell(inbox / "P1" / "c1", cell_arrays(MALE + ["21"], seed=2))
    age(inbox / "P1" / "c1", 10)
    monkeypatch.chdir(tmp_path)  # folders given relative to here; the results name crops by absolute paths
    base = ["watch", str(sized_bundle.path), "inbox", "--out", "out", "--precision", "int8", "--provider", "cpu"]
    first = CliRunner().invoke(app, [*base, "--once"])
    assert first.exit_code == 0, first.output
    # the lines `karyo karyotype CELL --case P1` prints, the cell named by its place in the inbox
    karyotype = CliRunner().invoke(app, ["karyotype", str(sized_bundle.path), str(inbox / "P1" / "c1"), "--case", "P1",
                                         "--precision", "int8", "--provider", "cpu"])
    assert karyotype.exit_code == 0 and karyotype.stdout.startswith(f"{inbox / 'P1' / 'c1'}: 47,XY,+21  (47 crops")
    assert first.stdout == karyotype.stdout.replace(f"{inbox / 'P1' / 'c1'}: ", "P1/c1: ")
    assert first.stdout.splitlines()[1].startswith("case P1: 47,XY,+21[1]  (1 cell counted")
    assert "1 cells, 0 already called" in first.stderr
    assert f"patients, newest first: {(out / 'index.html').absolute().as_uri()}" in first.stderr
    assert (out / "P1" / "case.html").is_file() and "47,XY,+21[1]" in (out / "index.html").read_text()
    written = json.loads((out / "P1" / "c1" / CELL_RESULT).read_text())
    assert written["assignments"][0]["path"] == str(inbox / "P1" / "c1" / "00.png")
    assert written["source"]["folder"] == str(inbox / "P1" / "c1")
    # again: nothing to do; a new cell with a corrupt crop is called, the exit code says a crop failed
    write_cell(inbox / "P1" / "c2", cell_arrays(MALE, seed=3))
    (inbox / "P1" / "c2" / "46.tif").write_bytes(b"II*\x00 broken")
    age(inbox / "P1" / "c2", 10)
    write_cell(inbox / "P1" / "c3", cell_arrays(MALE, seed=4))  # just written: left for later
    second = CliRunner().invoke(app, [*base, "--once"])
    assert second.exit_code == 1
    assert second.stdout.splitlines()[0].startswith("P1/c2: 46,XY  (46 crops, ") and "1 unreadable" in second.stdout
    assert second.stdout.splitlines()[1].startswith("case P1: ")
    assert "3 cells, 1 already called" in second.stderr and "46.tif" in second.stderr
    assert "1 cells not ready yet" in second.stderr and not (out / "P1" / "c3").exists()
    for args, message in ((["watch", str(sized_bundle.path), str(tmp_path / "nowhere"), "--out", str(out)], "no such folder"),
                          (["watch", str(sized_bundle.path), "inbox", "--out", str(inbox)], "not the inbox")):
        refused = CliRunner().invoke(app, [*args, "--once"])
        assert refused.exit_code == 2 and message in refused.stderr


@pytest.mark.parametrize("signals, written", [(("SIGTERM",), 1), (("SIGINT",), 1), (("SIGINT", "SIGINT"), 0)])
def test_a_stop_finishes_the_cell_in_hand_then_stops(sized_bundle, tmp_path, monkeypatch, signals, written):  # noqa: F811
    """How a service manager (SIGTERM), a person or a Windows service wrapper (Ctrl-C) stops the
    watcher: the cell being read is written, the next is left; Ctrl-C twice stops at once, and the
    cell in hand is left whole for the next start."""
    import signal

    from karyo.runtime.cli import app
    from karyo.runtime.karyotyper import Karyotyper

    inbox, out = tmp_path / "inbox", tmp_path / "out"
    for k in (1, 2):
        write_cell(inbox / "P1" / f"c{k}", cell_arrays(MALE, seed=k))
        age(inbox / "P1" / f"c{k}", 10)
    read = Karyotyper.read_cell

    def read_then_get_stopped(self, crops, name="cell", names=None):
        for number in signals:  # arrive while the first cell is in hand
            os.kill(os.getpid(), getattr(signal, number))
        return read(self, crops, name, names)

    monkeypatch.setattr(Karyotyper, "read_cell", read_then_get_stopped)
    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    result = CliRunner().invoke(app, ["watch", str(sized_bundle.path), str(inbox), "--out", str(out),
                                      "--precision", "int8", "--provider", "cpu", "--interval", "0.1"])
    assert result.exit_code == 0, result.output
    assert "stopping once the cell in hand is written" in result.stderr
    assert result.stderr.rstrip().endswith(f"stopped: {written} cells called") and "P1/c2" not in result.stdout
    assert result.stdout.startswith("P1/c1: 46,XY") == bool(written)
    assert (out / "P1" / "c1" / CELL_RESULT).is_file() == bool(written) and not (out / "P1" / "c2").exists()
    assert not list(out.rglob(".*"))  # nothing half-written left behind
    assert {number: signal.getsignal(number) for number in before} == before  # the handlers are put back


def test_a_relabel_file_calls_the_cell_again_around_what_the_reviewer_set(karyotyper, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    write_cell(inbox / "P1" / "c1", cell_arrays(MALE + ["21"], seed=2))
    age(inbox / "P1" / "c1", 10)
    watcher = CellWatcher(karyotyper, inbox, out, settle_s=5.0)
    assert [e.result.karyotype for e in watcher.poll()] == ["47,XY,+21"]
    (inbox / "P1" / "c1" / RELABEL_FILE).write_text(
        "# the third 21 is a 13\n46.png = 13\nnope\n99.png=5\n00.png=Z\n")
    age(inbox / "P1" / "c1", 10)
    events = watcher.poll()  # the file is part of the cell: writing it calls the cell again
    assert [(e.cell.key, e.result.karyotype) for e in events] == [("P1/c1", "47,XY,+13")]
    assert events[0].result.corrections == {46: "13"} and len(events[0].problems) == 3
    written = json.loads((out / "P1" / "c1" / CELL_RESULT).read_text())
    assert [r["corrected"] for r in written["assignments"]].count(True) == 1 and written["assignments"][46]["corrected"]
    problems = [e["error"] for e in written["errors"]]
    assert "'nope': write CROP=LABEL" in problems[0] and "99.png is not a readable crop" in problems[1]
    assert "'Z' is not a label of scheme normal24" in problems[2]
    assert json.loads((out / "P1" / CASE_RESULT).read_text())["karyotype"] == "47,XY,+13[1]"
    image = cv2.imread(str(out / "P1" / "c1" / KARYOGRAM))
    assert ((image[..., 0] > 170) & (image[..., 1] > 80) & (image[..., 1] < 140) & (image[..., 2] < 60)).sum() > 100
    assert watcher.poll() == []
