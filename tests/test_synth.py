"""The synthetic chromosome generator: classes, geometry, variants, karyotypes, determinism, CLI."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from karyo.export.synth import KaryotypeError, generate_dataset, parse_karyotype, render_cell
from karyo.export.synth.bands import TABLE_PATH, build_band_table, load_band_table
from karyo.export.synth.variants import band_profile
from karyo.runtime.dataset import read_labeled_folder
from karyo.runtime.labels import NORMAL24, SCHEME_NAMES, STRUCTURAL, scheme

BED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ideogram" / "cytobands_hg19.bed"


def _by_label(crops: list[tuple[str, np.ndarray]]) -> dict[str, list[np.ndarray]]:
    grouped: dict[str, list[np.ndarray]] = {}
    for label, crop in crops:
        grouped.setdefault(label, []).append(crop)
    return grouped


def _ink_profile(crop: np.ndarray) -> np.ndarray:
    return (255.0 - crop.astype(np.float64)).mean(axis=1)


@pytest.mark.parametrize("scheme_name", SCHEME_NAMES)
def test_every_class_of_the_scheme_is_produced(tmp_path: Path, scheme_name: str) -> None:
    cells = 6 if scheme_name == "seed32" else 4 if scheme_name == "normal24" else 2
    out = generate_dataset(tmp_path / "data", cells=cells, scheme=scheme_name, seed=1, progress=False, cells_per_case=1)
    samples = read_labeled_folder(out)
    counts = Counter(s.label for s in samples)
    assert set(counts) == set(scheme(scheme_name).labels)
    if scheme_name.startswith("binary:"):
        parent, variant = scheme(scheme_name).labels
        assert counts[parent] == counts[variant] == cells  # one of each per cell: balanced


def test_normal24_mixes_normal_and_aneuploid_cells(tmp_path: Path) -> None:
    out = generate_dataset(tmp_path / "d", cells=6, scheme="normal24", seed=0, progress=False, cells_per_case=1)
    per_cell = Counter(s.cell_key for s in read_labeled_folder(out))
    assert 46 in per_cell.values()
    assert any(n != 46 for n in per_cell.values())


def test_seed32_gives_structural_classes_real_numbers(tmp_path: Path) -> None:
    out = generate_dataset(tmp_path / "d", cells=15, scheme="seed32", seed=2, progress=False)
    counts = Counter(s.label for s in read_labeled_folder(out))
    for variant in STRUCTURAL:
        assert counts[variant] >= 3, (variant, counts[variant])
    cases = {s.case for s in read_labeled_folder(out)}
    assert len(cases) == 5  # 3 cells per case


def test_geometry_matches_scanner_crops() -> None:
    for seed in range(3):
        cell = _by_label(render_cell("46,XY", seed=seed))
        for label, crops in cell.items():
            for crop in crops:
                assert crop.dtype == np.uint8 and crop.ndim == 2
                h, w = crop.shape
                assert 10 <= w <= 60, (label, crop.shape)
                # white margin all round, ink within a few px of every edge (tight crop)
                assert crop[0].min() == crop[-1].min() == crop[:, 0].min() == crop[:, -1].min() == 255
                ink = np.argwhere(crop < 200)
                assert ink[:, 0].min() <= 5 and ink[:, 1].min() <= 5
                assert h - 1 - ink[:, 0].max() <= 5 and w - 1 - ink[:, 1].max() <= 5
                assert crop.min() < 150  # dark bands on white
        tallest_21 = max(c.shape[0] for c in cell["21"])
        assert min(c.shape[0] for c in cell["1"]) > 2.5 * tallest_21
        assert 60 <= np.mean([c.shape[0] for c in cell["1"]]) <= 150
        assert 15 <= np.mean([c.shape[0] for c in cell["21"]]) <= 45
        assert np.mean([c.shape[1] for c in cell["1"]]) > np.mean([c.shape[1] for c in cell["21"]])


def test_large_renders_scale_with_size() -> None:
    small = _by_label(render_cell("46,XX", seed=7, size=100))["1"][0]
    large = _by_label(render_cell("46,XX", seed=7, size=300))["1"][0]
    assert 2.5 < large.shape[0] / small.shape[0] < 3.5


def test_variants_change_the_band_profile() -> None:
    table = load_band_table()
    rng = lambda: np.random.default_rng(5)  # noqa: E731
    normal5, del5 = band_profile("5", table["5"], rng()), band_profile("del(5)(p14)", table["5"], rng())
    assert del5.length < normal5.length - 15  # 5p14 -> pter is about 23 Mb
    assert del5.centromere < normal5.centromere
    iso = band_profile("i(18)(q10)", table["18"], rng())
    assert iso.centromere == pytest.approx(iso.length / 2)
    assert np.allclose(iso.darkness, iso.darkness[::-1]) and np.allclose(np.diff(iso.edges), np.diff(iso.edges)[::-1])
    inv9, normal9 = band_profile("inv(9)(p12q13)", table["9"], rng()), band_profile("9", table["9"], rng())
    assert inv9.length == pytest.approx(normal9.length)
    assert inv9.centromere > normal9.centromere + 5  # the q12 heterochromatin moved into the short arm
    x = band_profile("X", table["X"], rng())
    assert band_profile("dup(X)(p22)", table["X"], rng()).centromere > x.centromere + 10
    assert band_profile("dup(X)(q21)", table["X"], rng()).length > x.length + 15
    assert band_profile("del(X)(q22)", table["X"], rng()).length < x.length - 40
    assert band_profile("del(18)(p11)", table["18"], rng()).centromere < 8


def test_variants_show_in_the_pixels() -> None:
    shorter, symmetric_iso, symmetric_normal = [], [], []
    for seed in range(4):
        cell = _by_label(render_cell("46,XX,del(5)(p14),i(18)(q10)", seed=seed))
        shorter.append(cell["del(5)(p14)"][0].shape[0] < cell["5"][0].shape[0])
        for label, sink in (("i(18)(q10)", symmetric_iso), ("18", symmetric_normal)):
            profile = _ink_profile(cell[label][0])
            sink.append(np.corrcoef(profile, profile[::-1])[0, 1])
    assert all(shorter)
    assert np.mean(symmetric_iso) > 0.85
    assert np.mean(symmetric_iso) > np.mean(symmetric_normal) + 0.1


@pytest.mark.parametrize(
    ("karyotype", "expected"),
    [
        ("46,XY", {"21": 2, "X": 1, "Y": 1}),
        ("47,XY,+21", {"21": 3, "X": 1, "Y": 1}),
        ("45,X", {"X": 1, "Y": 0}),
        ("47,XXY", {"X": 2, "Y": 1}),
        ("47,XYY", {"X": 1, "Y": 2}),
        ("47,XX,+18", {"18": 3}),
        ("47,XY,+13", {"13": 3}),
        ("46,XX,del(5)(p14)", {"5": 1, "del(5)(p14)": 1}),
        ("46,X,i(X)(q10)", {"X": 1, "i(X)(q10)": 1}),
        ("46,X,del(5)(p14),dup(X)(p22)", {"5": 1, "X": 1, "dup(X)(p22)": 1}),
    ],
)
def test_karyotypes_give_the_right_counts(karyotype: str, expected: dict[str, int]) -> None:
    labels = parse_karyotype(karyotype)
    assert len(labels) == int(karyotype.split(",")[0])
    counts = Counter(labels)
    for label, n in expected.items():
        assert counts[label] == n, (karyotype, label)
    assert Counter(label for label, _ in render_cell(karyotype, seed=0, size=40)) == counts


@pytest.mark.parametrize("bad", ["", "46", "XY,46", "47,XY", "46,XY,+23", "46,XQ", "46,XY,t(9;22)", "45,XY,-Y,-Y"])
def test_bad_karyotypes_are_refused_clearly(bad: str) -> None:
    with pytest.raises(KaryotypeError):
        parse_karyotype(bad)


def test_same_seed_same_pixels(tmp_path: Path) -> None:
    a, b, c = render_cell("46,XX", seed=11), render_cell("46,XX", seed=11), render_cell("46,XX", seed=12)
    assert all(la == lb and np.array_equal(ia, ib) for (la, ia), (lb, ib) in zip(a, b))
    assert any(ia.shape != ic.shape or not np.array_equal(ia, ic) for (_, ia), (_, ic) in zip(a, c))
    first = generate_dataset(tmp_path / "one", cells=2, scheme="binary:i(X)(q10)", seed=3, progress=False)
    second = generate_dataset(tmp_path / "two", cells=2, scheme="binary:i(X)(q10)", seed=3, progress=False)
    assert (first / "manifest.csv").read_text() == (second / "manifest.csv").read_text()
    for row in csv.DictReader((first / "manifest.csv").open()):
        assert (first / row["path"]).read_bytes() == (second / row["path"]).read_bytes()


def test_refuses_to_overwrite_a_foreign_folder_but_replaces_its_own(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        generate_dataset(foreign, cells=1, scheme="binary:del(18)(p11)", progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    out = tmp_path / "synth"
    generate_dataset(out, cells=2, scheme="binary:del(18)(p11)", seed=0, progress=False)
    generate_dataset(out, cells=1, scheme="binary:del(18)(p11)", seed=0, progress=False)
    assert len(read_labeled_folder(out)) == 2
    assert json.loads((out / "synth.json").read_text())["cells"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_cli_writes_a_manifest_the_reader_understands(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from karyo.export.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["synth", "--out", str(out), "--cells", "4", "--scheme", "seed32", "--seed", "4"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    samples = read_labeled_folder(out)
    assert [(s.label, s.case, s.cell) for s in samples] == [(r["label"], r["case"], r["cell"]) for r in rows]
    assert all(s.path.is_file() and s.path.parent.name == s.label for s in samples)
    assert {s.case for s in samples} == {"synth0001", "synth0002"}
    assert Counter(s.cell_key for s in samples) == Counter({f"synth000{c}/{k}": 46 for c in (1, 2) for k in ("01", "02", "03") if c == 1 or k == "01"})
    refused = CliRunner().invoke(app, ["synth", "--out", str(out), "--scheme", "nonsense"])
    assert refused.exit_code != 0 and "unknown label scheme" in refused.output


def test_band_table_holds_hg19_facts() -> None:
    table = load_band_table()
    assert set(table) == set(NORMAL24)
    assert table["1"].relative_length == pytest.approx(1.0)
    assert table["21"].relative_length < table["22"].relative_length  # chr21 is the smallest autosome
    for bands in table.values():
        assert np.all(np.diff(bands.edges) > 0)
        assert 0 < bands.centromere < bands.length
    assert table["9"].band_names[table["9"].band_names.index("q12")] == "q12"


def test_band_table_regenerates_from_the_bed() -> None:
    if not BED.is_file():
        pytest.skip(f"needs the hg19 cytoband BED at {BED} (../shared/data is not present)")
    assert build_band_table(BED) == json.loads(TABLE_PATH.read_text(encoding="utf-8"))
