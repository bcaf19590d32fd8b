"""The in-process API a scanner application embeds: cells of arrays in, the command line's calls out."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from karyo.runtime.labels import AUTOSOMES, NORMAL24

MALE = [c for c in AUTOSOMES for _ in range(2)] + ["X", "Y"]


def cell_arrays(labels: list[str], seed: int) -> list[np.ndarray]:
    """One cell's crops as a segmenter hands them over: uint8 gray arrays drawn from the tiny bundle's templates."""
    from tiny_models import noisy_crop

    rng = np.random.default_rng(seed)
    return [noisy_crop(NORMAL24.index(label), rng) for label in labels]


def write_cell(folder: Path, crops: list[np.ndarray]) -> list[Path]:
    folder.mkdir(parents=True)
    paths = [folder / f"{k:02d}.png" for k in range(len(crops))]
    for path, crop in zip(paths, crops):
        assert cv2.imwrite(str(path), crop)
    return paths


@pytest.fixture(scope="module")
def sized_bundle(tmp_path_factory):
    """The tiny bundle with a size prior in its manifest: each class expects a different size relative
    to its cell, so the prior moves every crop's probabilities (the tiny crops all measure alike)."""
    from tiny_models import make_bundle

    from karyo.runtime.bundle import load_bundle, write_manifest
    from karyo.runtime.cell_size import SizePrior
    from karyo.runtime.labels import scheme

    tiny = make_bundle(tmp_path_factory.mktemp("sized") / "b", precisions=("fp32", "int8"))
    labels, rng = scheme("normal24"), np.random.default_rng(8)
    names = [labels.labels[i % 24] for i in range(960)]
    relative = rng.normal(0.0, 0.3, (960, 2)) + np.array([[0.02 * (i % 24) - 0.2] * 2 for i in range(960)])
    manifest = load_bundle(tiny.path).manifest
    manifest.cell_size = SizePrior.fit(names, relative, labels)
    write_manifest(tiny.path, manifest)
    return load_bundle(tiny.path)


def test_arrays_are_called_as_the_command_line_calls_their_files(sized_bundle, tmp_path):
    """The same crops as arrays in memory and as PNG files read by `karyo karyotype --json`: the same
    cell entry to the last probability (the size prior weighed in, a speck kept out of the count),
    and the same karyogram pixels."""
    from karyo.runtime import Karyotyper
    from karyo.runtime.cli import app

    speck = np.full((40, 20), 250, np.uint8)
    speck[19:21, 9:12] = 40  # debris: 6 px against the 120 of a chromosome of this cell
    crops = cell_arrays(MALE + ["21"], seed=3) + [speck]
    paths = write_cell(tmp_path / "cell", crops)
    result = CliRunner().invoke(app, ["karyotype", str(sized_bundle.path), str(tmp_path / "cell"), "--json",
                                      "--precision", "int8", "--provider", "cpu", "--karyogram", str(tmp_path / "cli.png")])
    assert result.exit_code == 0, result.output
    cli_cell = json.loads(result.stdout)["cells"][0]
    with Karyotyper(sized_bundle, precision="int8", provider="cpu") as karyotyper:
        cell = karyotyper.read_cell(crops, name=str(tmp_path / "cell"), names=[str(p) for p in paths])
        drawn = karyotyper.karyogram(cell, tmp_path / "api.png")
    assert cell.karyotype == "47,XY,+21" and cell.call.findings[0] == "trisomy 21" and not cell.errors
    assert cell.call.assignments[-1].fragment and "too small for a whole chromosome" in cell.call.findings[-1]
    assert cell.to_dict() == {k: v for k, v in cli_cell.items() if k != "karyogram"}
    np.testing.assert_array_equal(cv2.imread(str(drawn)), cv2.imread(str(tmp_path / "cli.png")))
    from karyo.runtime.karyogram import TITLE_HEIGHT

    assert cv2.imread(str(drawn))[TITLE_HEIGHT - 8 : TITLE_HEIGHT].min() < 100  # the cell's name under the call
    # the size prior was weighed in: without it the same crops read with other probabilities
    plain = Karyotyper(sized_bundle, precision="int8", provider="cpu")
    plain.classifier.bundle.manifest.cell_size = None
    unsized = plain.read_cell(crops, names=[str(p) for p in paths]).call.assignments
    assert max(abs(a.probability - b.probability) for a, b in zip(cell.call.assignments, unsized)) > 0.01
    assert karyotyper.describe()["precision"] == "int8" and karyotyper.describe()["trisomies"] == "viable"


def test_an_unreadable_array_is_left_out_and_named_by_its_place(tiny_bundle):
    """A blank cut and a zero-size array among a cell's crops: each gets its own error naming its place,
    the other 46 are called, and files and arrays may be mixed."""
    from karyo.runtime import Karyotyper

    crops: list = cell_arrays(MALE, seed=4)
    crops.insert(10, np.full((60, 24), 245, np.uint8))
    crops.insert(30, np.zeros((0, 5), np.uint8))
    karyotyper = Karyotyper(tiny_bundle.path, precision="fp32", provider="cpu")
    cell = karyotyper.read_cell(crops, name="P1/3")
    assert (cell.karyotype, cell.call.count) == ("46,XY", 46)
    assert [p.error.split(":")[0] for p in cell.errors] == ["image 10", "image 30"]
    assert "no chromosome in the image" in cell.errors[0].error and "zero-size" in cell.errors[1].error
    assert [e["error"] for e in cell.to_dict()["errors"]] == [p.error for p in cell.errors]
    assert len(cell.readable) == 46 and all(a.path is None for a in cell.call.assignments)
    nothing = karyotyper.read_cell([np.zeros((0, 5), np.uint8)], name="empty")
    assert nothing.call is None and nothing.to_dict()["karyotype"] is None and nothing.cell_call() is None
    with pytest.raises(ValueError, match="no readable crops"):
        karyotyper.karyogram(nothing, "never.png")
    with pytest.raises(ValueError, match="2 names for 46 crops"):
        karyotyper.read_cell(crops[:46], names=["a", "b"])


def test_a_patients_cells_make_its_karyotype_under_the_labs_trisomies(tiny_bundle):
    """Two trisomic cells and a normal one: a constitutional mosaic by the clone rule; for marrow work
    (`trisomies="any"`) the same lines without `mos`. A cell with no readable crop takes no part."""
    from karyo.runtime import Karyotyper

    cells_of = lambda k: [  # noqa: E731
        k.read_cell(cell_arrays(MALE + ["21"], seed=10), "c1"), k.read_cell(cell_arrays(MALE, seed=11), "c2"),
        k.read_cell(cell_arrays(MALE + ["21"], seed=12), "c3"), k.read_cell([np.zeros((0, 3), np.uint8)], "c4"),
    ]
    constitutional = Karyotyper(tiny_bundle.path, precision="fp32", provider="cpu")
    summary = constitutional.summarize("P7", cells_of(constitutional))
    assert summary.karyotype == "mos 47,XY,+21[2]/46,XY[1]" and summary.counted == 3
    assert [line.cells for line in summary.lines] == [["c1", "c3"], ["c2"]]
    marrow = Karyotyper(constitutional.classifier, trisomies="any")
    assert marrow.priors.trisomy("9") == 6.0 and constitutional.priors.trisomy("9") == 8.0
    assert marrow.summarize("P7", cells_of(marrow)).karyotype == "47,XY,+21[2]/46,XY[1]"
    with pytest.raises(ValueError, match="trisomies 'blood'"):
        Karyotyper(constitutional.classifier, trisomies="blood")


def test_cells_read_from_several_threads_get_the_same_calls(tiny_bundle):
    from karyo.runtime import Karyotyper

    karyotyper = Karyotyper(tiny_bundle.path, precision="int8", provider="cpu")
    cells = [cell_arrays(MALE + (["18"] if k % 2 else []), seed=20 + k) for k in range(6)]
    alone = [karyotyper.read_cell(crops, f"c{k}").to_dict() for k, crops in enumerate(cells)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda item: karyotyper.read_cell(item[1], f"c{item[0]}").to_dict(), enumerate(cells)))
    assert together == alone
    assert [c["karyotype"] for c in alone] == ["46,XY", "47,XY,+18"] * 3


def test_a_bundle_without_a_karyotype_is_refused_before_any_crop_is_read(tmp_path):
    from tiny_models import make_bundle

    from karyo.runtime import Karyotyper

    binary = make_bundle(tmp_path / "binary", scheme_name="binary:del(5)(p14)", precisions=("fp32",))
    with pytest.raises(ValueError, match="binary"):
        Karyotyper(binary.path, provider="cpu")


def test_the_readmes_example_runs_as_written(tiny_bundle, tmp_path, monkeypatch):
    """README's "In a scanner application" block, run as written on the tiny bundle with a trisomic
    cell and two more of the patient's (its comments show a real patient's 20 cells)."""
    import re

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (block,) = re.findall(r"```python\n(from karyo\.runtime import Karyotyper\n.*?)```", text, re.S)
    monkeypatch.chdir(tmp_path)
    namespace = {"crops": cell_arrays(MALE + ["21"], seed=30)}
    code = block.replace('"bundle/"', repr(str(tiny_bundle.path)))
    from karyo.runtime import Karyotyper

    with Karyotyper(tiny_bundle.path, precision="fp32", provider="cpu") as other:
        namespace["other_cells"] = [other.read_cell(cell_arrays(MALE + ["21"], seed=31), "P17/4"),
                                    other.read_cell(cell_arrays(MALE, seed=32), "P17/5")]
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["cell"].karyotype == "47,XY,+21" and (tmp_path / "P17_3.png").is_file()
    assert namespace["patient"].karyotype == "mos 47,XY,+21[2]/46,XY[1]"


def test_a_reviewers_corrections_call_the_cell_again_without_reading_it_again(sized_bundle, tmp_path):
    """The speck of a 47,XY,+21 cell set to 13 by the reviewer is counted (48,XY,+13,+21); a crop
    named by its file or by its place; corrections add up; the JSON marks the corrected crops."""
    from karyo.runtime import Karyotyper

    speck = np.full((40, 20), 250, np.uint8)
    speck[19:21, 9:12] = 40
    crops = cell_arrays(MALE + ["21"], seed=3) + [speck]
    paths = [str(p) for p in write_cell(tmp_path / "cell", crops)]
    karyotyper = Karyotyper(sized_bundle, precision="fp32", provider="cpu")
    cell = karyotyper.read_cell(paths, name="cell")
    assert cell.karyotype == "47,XY,+21" and cell.call.assignments[47].fragment
    calls = []
    karyotyper.classifier.predict_cell = lambda *a, **k: calls.append(a)  # correcting must not read crops again
    fixed = karyotyper.correct(cell, {paths[47]: "13"})
    assert fixed.karyotype == "48,XY,+13,+21" and calls == [] and fixed.corrections == {47: "13"}
    assert cell.karyotype == "47,XY,+21" and cell.corrections == {}  # the first reading is left as it was
    rows = fixed.to_dict()["assignments"]
    assert [r["corrected"] for r in rows].count(True) == 1 and rows[47]["corrected"] and rows[47]["label"] == "13"
    assert not rows[47]["fragment"] and not rows[47]["review"]
    # the karyogram boxes the crop the reviewer set in blue, under "not counted" no longer
    def blue_pixels(result) -> int:
        image = cv2.imread(str(karyotyper.karyogram(result, tmp_path / "cell.png")))
        return int(((image[..., 0] > 170) & (image[..., 1] > 80) & (image[..., 1] < 140) & (image[..., 2] < 60)).sum())

    assert blue_pixels(fixed) > 100 and blue_pixels(cell) == 0
    again = karyotyper.correct(fixed, {46: "18"})  # the third 21 was an 18 after all, say
    assert again.corrections == {47: "13", 46: "18"} and again.karyotype == "48,XY,+13,+18"
    with pytest.raises(ValueError, match="no crop 'elsewhere.png' among its 48 readable crops"):
        karyotyper.correct(cell, {"elsewhere.png": "5"})
    with pytest.raises(ValueError, match="'Z' is not a label of scheme normal24"):
        karyotyper.correct(cell, {0: "Z"})
    assert karyotyper.correct(cell, {0: "23"}).call.assignments[0].label == "X"  # as a folder would name it


def test_cli_relabel_calls_the_cell_around_what_the_reviewer_set(sized_bundle, tmp_path):
    from karyo.runtime.cli import app

    speck = np.full((40, 20), 250, np.uint8)
    speck[19:21, 9:12] = 40
    paths = write_cell(tmp_path / "cell", cell_arrays(MALE + ["21"], seed=3) + [speck])
    base = ["karyotype", str(sized_bundle.path), str(tmp_path / "cell"), "--precision", "fp32", "--provider", "cpu"]
    plain = CliRunner().invoke(app, [*base, "--relabel", f"{paths[47]}=13"])
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.startswith(f"{tmp_path / 'cell'}: 48,XY,+13,+21  (48 crops, 1 relabelled")
    # any spelling of the crop's path (here with a "./" in it); the JSON marks the crop
    document = json.loads(CliRunner().invoke(app, [*base, "--json", "--relabel", f"{tmp_path}/./cell/47.png=13"]).stdout)
    assert document["cells"][0]["karyotype"] == "48,XY,+13,+21" and document["cells"][0]["assignments"][47]["corrected"]
    for value, message in ((f"{tmp_path}/other.png=13", "is not a crop of the cells given"),
                           (f"{paths[0]}=Z", "'Z' is not a label of scheme normal24"), ("47.png", "write CROP=LABEL")):
        refused = CliRunner().invoke(app, [*base, "--relabel", value])
        assert refused.exit_code == 2 and message in refused.stderr and refused.stdout == ""
