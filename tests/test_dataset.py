"""Labeled-folder reading for the layouts labs really use, with and without manifest.csv."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from karyo.runtime.dataset import class_counts, read_labeled_folder, read_labeled_folders
from karyo.runtime.labels import NORMAL24


def _img(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((6, 4), 200, np.uint8))
    return path


def _by_name(samples) -> dict[str, object]:
    return {s.path.name: s for s in samples}


def test_numbered_folders_23_is_x_24_is_y(tmp_path):
    for k in (1, 9, 22, 23, 24):
        _img(tmp_path / str(k) / f"{k}_a.tiff")
    samples = read_labeled_folder(tmp_path)
    assert {s.path.name: s.label for s in samples} == {"1_a.tiff": "1", "9_a.tiff": "9", "22_a.tiff": "22", "23_a.tiff": "X", "24_a.tiff": "Y"}
    assert {s.case for s in samples} == {"unknown"}


def test_case_cell_tiff_folders_with_clase_classes(tmp_path):
    _img(tmp_path / "1001.3.tiff" / "clase1" / "clase1_1_1001.3.tiff")
    _img(tmp_path / "1001.3.tiff" / "clase23" / "clase23_1_1001.3.tiff")
    _img(tmp_path / "1002.7.tiff" / "clase24" / "clase24_1_1002.7.tiff")
    found = _by_name(read_labeled_folder(tmp_path))
    assert found["clase1_1_1001.3.tiff"].label == "1"
    assert found["clase23_1_1001.3.tiff"].label == "X"
    assert found["clase24_1_1002.7.tiff"].label == "Y"
    assert found["clase1_1_1001.3.tiff"].case == "1001.3.tiff"  # the folder named like a file is a folder
    assert found["clase1_1_1001.3.tiff"].cell_key == found["clase23_1_1001.3.tiff"].cell_key
    assert found["clase24_1_1002.7.tiff"].cell_key != found["clase1_1_1001.3.tiff"].cell_key


@pytest.mark.parametrize(
    "folder,label",
    [("chr_01", "1"), ("chr_x", "X"), ("X", "X"), ("01", "1"), ("y", "Y"), ("Chromosome 7", "7"), ("clase9", "9"),
     ("chr_9_inversion", "inv(9)(p12q13)"), ("del(X)(q22)", "del(X)(q22)")],
)
def test_folder_name_spellings(tmp_path, folder, label):
    _img(tmp_path / "caseA" / folder / "a.png")
    (sample,) = read_labeled_folder(tmp_path)
    assert sample.label == label and sample.case == "caseA"


def test_nearest_class_folder_wins_and_junk_is_skipped(tmp_path):
    _img(tmp_path / "7" / "sub" / "12" / "deep.png")  # nearest class folder is 12
    _img(tmp_path / "3" / "a.bmp")
    _img(tmp_path / "3" / ".hidden.png")
    _img(tmp_path / ".trash" / "4" / "b.png")
    _img(tmp_path / "notes" / "c.png")  # no class folder above it
    (tmp_path / "3" / "readme.txt").write_text("not an image")
    _img(tmp_path / "loose.png")
    found = {s.path.name: s.label for s in read_labeled_folder(tmp_path)}
    assert found == {"deep.png": "12", "a.bmp": "3"}


def test_manifest_csv_gives_case_and_cell(tmp_path):
    _img(tmp_path / "imgs" / "a.png")
    _img(tmp_path / "imgs" / "b.png")
    (tmp_path / "manifest.csv").write_text("path,label,case,cell\nimgs/a.png,23,P1,c4\nimgs/b.png,chr_05,P2,\n")
    a, b = read_labeled_folder(tmp_path)
    assert (a.label, a.case, a.cell, a.cell_key) == ("X", "P1", "c4", "P1/c4")
    assert (b.label, b.case, b.cell) == ("5", "P2", "unknown")
    with pytest.raises(ValueError, match="no labeled images"):  # ignoring the manifest, no class folders
        read_labeled_folder(tmp_path, use_manifest=False)


def test_manifest_without_the_tree_layout_still_works_and_bad_rows_are_named(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,label\nx.png,banana\n")
    with pytest.raises(ValueError, match=r"manifest.csv:2: unknown label 'banana'"):
        read_labeled_folder(tmp_path)
    (tmp_path / "manifest.csv").write_text("file,label\nx.png,1\n")
    with pytest.raises(ValueError, match="missing column"):
        read_labeled_folder(tmp_path)


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no labeled images"):
        read_labeled_folder(tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        read_labeled_folder(tmp_path / "nope")


def test_several_roots_keep_their_cases_apart(tmp_path):
    _img(tmp_path / "labA" / "case1" / "1" / "a.png")
    _img(tmp_path / "labB" / "case1" / "1" / "a.png")
    samples = read_labeled_folders([tmp_path / "labA", tmp_path / "labB"])
    assert sorted(s.case for s in samples) == ["labA:case1", "labB:case1"]
    assert class_counts(samples) == {"1": 2}


@pytest.mark.realdata
@pytest.mark.parametrize("name,expected", [("pampaj7", 2806), ("pki-dev", 17516)])
def test_real_trees_read_the_same_with_and_without_manifest(shared_data, name, expected):
    root = shared_data / name
    started = time.perf_counter()
    with_manifest = read_labeled_folder(root)
    scanned = read_labeled_folder(root, use_manifest=False)
    assert len(with_manifest) == len(scanned) == expected
    truth = {str(s.path): s.label for s in with_manifest}  # manifest paths are root-relative, as scanned ones
    assert {str(s.path): s.label for s in scanned} == truth
    counts = Counter(truth.values())
    assert set(counts) <= set(NORMAL24) and min(counts[str(k)] for k in range(1, 23)) > 0
    assert time.perf_counter() - started < 30
