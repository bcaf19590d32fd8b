"""`karyo evaluate --errors`: the crops called wrong, drawn by (true, called) pair and listed, the same
crops the JSON counts wrong."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
from typer.testing import CliRunner

from karyo.runtime.error_gallery import WrongCrop, grouped, render_gallery
from karyo.runtime.labels import NORMAL24
from test_karyotyper import cell_arrays, sized_bundle, write_cell  # noqa: F401 - the fixture is used by name
from test_watch import MALE


def _wrong(truth: str, called: str, path: str, flagged: bool = False) -> WrongCrop:
    return WrongCrop(path, "c", truth, called, 0.4, flagged, False)


def test_look_alikes_exchanged_stand_together_commonest_first():
    crops = [_wrong("5", "4", "b"), _wrong("5", "4", "a"), _wrong("4", "5", "c"), _wrong("21", "22", "d"),
             _wrong("8", "11", "e"), _wrong("8", "10", "f"), _wrong("10", "8", "g"), _wrong("11", "8", "h"),
             _wrong("13", "not counted", "i")]
    order = [[(c.truth, c.called, c.path) for c in group] for group in grouped(crops, NORMAL24)]
    assert order == [[("5", "4", "a"), ("5", "4", "b")], [("4", "5", "c")],  # 3 crops of 4 and 5
                     [("8", "10", "f")], [("10", "8", "g")], [("8", "11", "e")], [("11", "8", "h")],
                     [("13", "not counted", "i")], [("21", "22", "d")]]


def test_crops_share_one_scale_and_flagged_ones_get_a_red_box():
    tall, short = np.full((80, 20), 60, np.uint8), np.full((40, 20), 60, np.uint8)
    groups = [[(_wrong("1", "2", "a", flagged=True), tall), (_wrong("1", "2", "b"), short)]]
    image = render_gallery(groups, ["title"], width=600, tile_height=100)
    tiles = (image == 60).all(axis=2)  # the crops' gray; text is darker and blended
    columns = np.flatnonzero(tiles.sum(axis=0))
    heights = [tiles[:, x].sum() for x in (columns.min() + 5, columns.max() - 5)]
    assert heights == [100, 50]  # the tallest crop is 100 px, the other at the same scale
    red = (image[..., 2] > 200) & (image[..., 1] < 80) & (image[..., 0] < 80)
    left, right = columns.min(), columns.max()
    assert red[:, left - 3:left + 3].sum() > 100 and red[:, right - 3:right + 4].sum() == 0


def test_evaluate_draws_and_lists_exactly_the_crops_it_counts_wrong(sized_bundle, tmp_path):  # noqa: F811
    from karyo.runtime.cli import app

    data = tmp_path / "data"
    rows = ["path,label,case,cell"]
    for cell, seed in (("1", 1), ("2", 2)):
        labels = list(MALE)
        paths = write_cell(data / f"c{cell}", cell_arrays(labels, seed=seed))
        if cell == "2":  # a person's slip: one 4 and one 5 written down as each other
            labels[6], labels[8] = "5", "4"
        rows += [f"c{cell}/{p.name},{label},P1,{cell}" for p, label in zip(paths, labels)]
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "gallery" / "errors.png"
    result = CliRunner().invoke(app, ["evaluate", str(sized_bundle.path), str(data), "--precision", "int8", "--json",
                                      "--errors", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    listed = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert len(listed) == report["cells"]["review"]["wrong_assembled"] >= 2
    assert sum(row["flagged"] == "True" for row in listed) == report["cells"]["review"]["wrong_flagged"]
    slip = {(row["path"].rsplit("/", 2)[-2:][0], row["truth"], row["called"]) for row in listed}
    assert {("c2", "5", "4"), ("c2", "4", "5")} <= slip  # the crops read as drawn, against the slipped labels
    assert all(row["cell"] in ("P1/1", "P1/2") and row["drawn"] == "True" for row in listed)
    assert f"crops called wrong: {len(listed)}, {len(listed)} drawn in {out}" in result.stderr
    image = cv2.imread(str(out))
    assert image is not None and image.shape[1] == 1200 and (image < 100).any()
    # no cells known (a folder per class, nothing above it): counted from the image alone, none drawn past the cap
    tree = tmp_path / "tree"
    for k, label in enumerate(MALE[:12]):
        folder = tree / ("5" if label == "4" else label)  # the two 4s filed under 5
        folder.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(folder / f"{k}.png"), cell_arrays([label], seed=k)[0])
    from karyo.runtime.bundle import load_bundle
    from karyo.runtime.error_gallery import write_error_gallery
    from karyo.runtime.evaluate import evaluate_bundle

    alone = evaluate_bundle(sized_bundle, tree, precision="int8")
    picture, listing, wrong, drawn = write_error_gallery(alone, load_bundle(sized_bundle.path), tmp_path / "t.png",
                                                         max_drawn=1)
    assert len(wrong) == round(alone.reports["int8"]["n"] * (1 - alone.reports["int8"]["accuracy"])) >= 2
    assert drawn == 1 and all(c.cell is None for c in wrong)
    assert sum((c.truth, c.called) == ("5", "4") for c in wrong) == 2
    assert [row["drawn"] for row in csv.DictReader(listing.open())].count("True") == 1
