"""Karyogram PNG: geometry of the standard arrangement, pixels in the tiles, review marking."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from karyo.runtime.karyogram import (
    CROP_GAP,
    LEGEND_HEIGHT,
    MARGIN,
    NOT_COUNTED,
    ROWS,
    SUBTITLE_HEIGHT,
    TITLE_HEIGHT,
    draw_karyogram,
    layout_karyogram,
    legend_lines,
    render_karyogram,
    _hint,
)
from karyo.runtime.karyotype import CropAssignment
from karyo.runtime.labels import AUTOSOMES

MALE = [c for c in AUTOSOMES for _ in range(2)] + ["X", "Y"]


def crop_for(label: str, copy: int) -> np.ndarray:
    """White crop with a dark body; height falls with the chromosome number like real ones."""
    order = 23 if label == "X" else 24 if label == "Y" else int(label)
    height, width = 80 - 2 * order, 20 + copy
    crop = np.full((height, width), 255, np.uint8)
    crop[3:-3, 4:-4] = 30 + order
    return crop


def make_cell(labels: list[str], review: set[int] = frozenset()):
    crops = [crop_for(label, labels[:i].count(label)) for i, label in enumerate(labels)]
    assignments = [CropAssignment(i, label, 0.9, label, 0.9, i in review) for i, label in enumerate(labels)]
    return crops, assignments


def is_red(pixels: np.ndarray) -> np.ndarray:
    return (pixels[..., 2] > 200) & (pixels[..., 1] < 80) & (pixels[..., 0] < 80)


def test_layout_follows_the_standard_rows_with_one_scale():
    crops, assignments = make_cell(MALE + ["21"])
    layout = layout_karyogram([c.shape for c in crops], assignments, tile_height=120)
    assert layout.scale == pytest.approx(120 / 78)  # the tallest crop (chromosome 1) is 120 px
    for crop, (x, y, w, h) in zip(crops, layout.boxes):
        assert h == round(crop.shape[0] * layout.scale) and w == round(crop.shape[1] * layout.scale)
        assert 0 <= x and x + w <= layout.width and y >= TITLE_HEIGHT and y + h <= layout.height

    def boxes(label):
        return [layout.boxes[i] for i, a in enumerate(assignments) if a.label == label]

    # rows top to bottom, groups left to right
    for row_number, row in enumerate(ROWS):
        baselines = {y + h for c in row for (x, y, w, h) in boxes(c)}
        assert len(baselines) == 1  # all copies stand on one baseline
        lefts = [min(x for x, *_ in boxes(c)) for c in row]
        assert lefts == sorted(lefts)
        if row_number:
            previous = {y + h for c in ROWS[row_number - 1] for (x, y, w, h) in boxes(c)}
            assert min(baselines) > max(previous)
    # pairs side by side, the extra 21 right after the pair
    first, second, third = boxes("21")
    assert second[0] == first[0] + first[2] + CROP_GAP and third[0] == second[0] + second[2] + CROP_GAP


def test_png_has_tiles_where_the_layout_says(tmp_path):
    labels = MALE
    crops, assignments = make_cell(labels, review={5, 40})
    path = draw_karyogram(crops, assignments, tmp_path / "cell.png", title="46,XY")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    _, layout = render_karyogram(crops, assignments, title="46,XY")
    assert image.shape == (layout.height, layout.width, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["cell.png"]  # atomic: no temp file left
    for crop, (x, y, w, h) in zip(crops, layout.boxes):
        tile = image[y : y + h, x : x + w, 1]
        body = tile[h // 4 : 3 * h // 4, w // 3 : 2 * w // 3]
        assert abs(float(body.mean()) - float(crop[3:-3, 4:-4].mean())) < 4  # the crop's own gray level
        assert tile[0].min() > 200  # white border of the crop at the top of the tile
    # the gap between the 1 pair and the 2 pair is background
    right_of_1 = max(x + w for (x, y, w, h), a in zip(layout.boxes, assignments) if a.label == "1")
    left_of_2 = min(x for (x, y, w, h), a in zip(layout.boxes, assignments) if a.label == "2")
    y, h = layout.boxes[0][1], layout.boxes[0][3]
    assert image[y : y + h, right_of_1 + 4 : left_of_2 - 4].min() > 240
    # title band carries text
    assert image[:TITLE_HEIGHT].min() < 100


def test_the_cells_name_stands_under_the_call_and_the_rows_make_room_for_it():
    crops, assignments = make_cell(MALE)
    plain, plain_layout = render_karyogram(crops, assignments, title="46,XY")
    named, layout = render_karyogram(crops, assignments, title="46,XY", subtitle="P17/cell3")
    # every crop moved down by the name's line, nothing else: same width, same columns
    assert layout.height == plain_layout.height + SUBTITLE_HEIGHT and layout.width == plain_layout.width
    assert [(x, y - SUBTITLE_HEIGHT, w, h) for x, y, w, h in layout.boxes] == plain_layout.boxes
    band = named[TITLE_HEIGHT - 8 : TITLE_HEIGHT + SUBTITLE_HEIGHT - 8, MARGIN:-MARGIN]
    assert (band < 100).sum() > 50 and plain[TITLE_HEIGHT - 8 : TITLE_HEIGHT, MARGIN:-MARGIN].min() > 240
    np.testing.assert_array_equal(named[layout.boxes[0][1]:], plain[plain_layout.boxes[0][1]:])
    # a name wider than the rows widens the picture rather than running off it
    long_name = "/data/scanner/exports/2026-11-25/laboratory-of-cytogenetics/patient-000417-ABC/slide-03/metaphase-0012"
    _, wide = render_karyogram(crops, assignments, title="46,XY", subtitle=long_name)
    assert wide.width == cv2.getTextSize(long_name, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)[0][0] + 2 * MARGIN > layout.width


def test_review_crops_get_a_red_box_and_others_do_not():
    crops, assignments = make_cell(MALE, review={5, 40})
    image, layout = render_karyogram(crops, assignments, title="46,XY")
    for index, (x, y, w, h) in enumerate(layout.boxes):
        ring = np.concatenate([image[y - 2, x - 2 : x + w + 2], image[y + h + 1, x - 2 : x + w + 2],
                               image[y - 2 : y + h + 2, x - 2], image[y - 2 : y + h + 2, x + w + 1]])
        assert is_red(ring).mean() > 0.9 if index in (5, 40) else not is_red(ring).any()
    plain, _ = render_karyogram(crops, make_cell(MALE)[1], title="46,XY")
    assert not is_red(plain).any()


def is_blue(pixels: np.ndarray) -> np.ndarray:
    return (pixels[..., 0] > 170) & (pixels[..., 1] > 80) & (pixels[..., 1] < 140) & (pixels[..., 2] < 60)


def test_crops_labelled_on_review_get_a_blue_box_and_a_legend_line():
    crops, assignments = make_cell(MALE, review={40})
    assignments[6] = replace(assignments[6], corrected=True)  # a 4 a reviewer set
    image, layout = render_karyogram(crops, assignments, title="46,XY")

    def ring(index: int) -> np.ndarray:
        x, y, w, h = layout.boxes[index]
        return np.concatenate([image[y - 2, x - 2 : x + w + 2], image[y + h + 1, x - 2 : x + w + 2],
                               image[y - 2 : y + h + 2, x - 2], image[y - 2 : y + h + 2, x + w + 1]])

    assert is_blue(ring(6)).mean() > 0.9 and not is_red(ring(6)).any()
    assert is_red(ring(40)).mean() > 0.9 and not is_blue(ring(40)).any()
    assert not any(is_blue(ring(k)).any() for k in range(len(assignments)) if k != 6)
    assert legend_lines(assignments)[-1] == "blue box: 1 crop(s) labelled on review"
    # the legend's blue line is drawn in blue, under the red one
    legend = image[-2 * LEGEND_HEIGHT :]
    blue_rows, red_rows = np.flatnonzero(is_blue(legend).any(axis=1)), np.flatnonzero(is_red(legend).any(axis=1))
    assert blue_rows.size and red_rows.size and blue_rows.min() > red_rows.max()
    # with nothing to review, the blue line stands alone
    alone = [replace(a, review=False) for a in assignments]
    assert legend_lines(alone) == ["blue box: 1 crop(s) labelled on review"]
    assert not is_blue(render_karyogram(crops, make_cell(MALE)[1])[0]).any()


def test_a_review_hint_names_the_alternative_under_its_box_only():
    crops, assignments = make_cell(MALE, review={6, 8})
    four, five = 6, 8  # the first 4 and the first 5, read as each other's label
    assignments[four] = replace(assignments[four], swap_with=five, alternative="5")
    assignments[five] = replace(assignments[five], swap_with=four, alternative="4")
    image, layout = render_karyogram(crops, assignments, title="46,XY")
    plain_layout = layout_karyogram([c.shape for c in crops], make_cell(MALE, review={6, 8})[1], title="46,XY")
    assert layout.hint_offset is not None and plain_layout.hint_offset is None
    assert layout.height > plain_layout.height  # a line per row for the hints, a second legend line
    assert layout_karyogram([c.shape for c in crops], assignments).boxes[0][1] == plain_layout.boxes[0][1]

    def hint_band(index: int) -> np.ndarray:
        x, y, w, h = layout.boxes[index]
        top = y + h + layout.hint_offset
        return image[top - 2 : top + 14, x - 4 : x + w + 4]

    assert is_red(hint_band(four)).sum() > 15 and is_red(hint_band(five)).sum() > 15
    second_four = 7  # same baseline, no hint: the band under it holds no red
    assert not is_red(hint_band(second_four)).any() and not is_red(hint_band(0)).any()
    # the legend explains the hint in a second red line; the canvas is wide enough for it
    assert legend_lines(assignments)[1].startswith('red "5?"') and len(legend_lines(make_cell(MALE)[1])) == 0
    legend_rows = np.flatnonzero(is_red(image[-2 * LEGEND_HEIGHT :]).any(axis=1))
    assert legend_rows.min() < LEGEND_HEIGHT <= legend_rows.max()
    assert not is_red(image[:, -MARGIN + 2 :]).any()  # nothing runs off the right edge


def test_a_crop_that_may_hold_two_chromosomes_is_hinted_with_a_plus():
    crops, assignments = make_cell(MALE, review={12})
    assignments[12] = replace(assignments[12], alternative="15", joined=True)  # the first 7, a 15 beside it?
    assert _hint(assignments[12]) == "+15?"
    lines = legend_lines(assignments)
    assert len(lines) == 2 and lines[1].startswith('red "+21?" under a box: the crop may hold a 21 as well')
    image, layout = render_karyogram(crops, assignments, title="45,XY,-15")
    x, y, w, h = layout.boxes[12]
    top = y + h + layout.hint_offset
    assert is_red(image[top - 2 : top + 14, x - 4 : x + w + 4]).sum() > 15  # "+15?" written under it


def test_hints_under_two_narrow_neighbours_stay_apart():
    """Two thin 20s, each hinted "19?": the hints are wider than the crops, and must not run together."""
    crops, assignments = make_cell(MALE, review={38, 39})
    for i in (38, 39):
        crops[i] = crops[i][:, :8]  # 8 px wide: about 12 px drawn, under a hint about 20 px wide
        assignments[i] = replace(assignments[i], alternative="19")
    image, layout = render_karyogram(crops, assignments, title="46,XY")
    (x1, y1, w1, h1), (x2, _, w2, _) = layout.boxes[38], layout.boxes[39]
    assert (w1, w2) == (round(8 * layout.scale),) * 2
    top, left = y1 + h1 + layout.hint_offset, x1 - 30
    red_columns = np.flatnonzero(is_red(image[top : top + 14, left : x2 + w2 + 30]).any(axis=0)) + left
    # split where 4 or more columns hold no red: the two hints, each centred under its own crop
    hints = np.split(red_columns, np.flatnonzero(np.diff(red_columns) > 4) + 1)
    assert len(hints) == 2
    for hint, (x, _, w, _) in zip(hints, (layout.boxes[38], layout.boxes[39])):
        assert abs((hint.min() + hint.max()) / 2 - (x + w / 2)) <= 2


def test_empty_group_leaves_room_and_light_on_dark_crops_are_inverted():
    crops, assignments = make_cell(MALE[:-1] + ["X"])  # 46,XX: no Y
    crops[0] = 255 - crops[0]  # one crop arrives light-on-dark
    image, layout = render_karyogram(crops, assignments, title="46,XX")
    x, y, w, h = layout.boxes[0]
    assert image[y, x : x + w].min() > 200  # displayed dark-on-white like the others
    y_group_x, y_group_baseline = layout.group_centers["Y"]
    x_group_x, x_group_baseline = layout.group_centers["X"]
    assert y_group_x > x_group_x + 40 and y_group_baseline == x_group_baseline  # Y keeps its place


def test_a_fragment_stands_apart_under_not_counted_with_a_red_box():
    crops, assignments = make_cell(MALE + ["21"])
    speck = np.full((8, 9), 255, np.uint8)
    speck[2:6, 2:7] = 40
    crops[-1] = speck
    assignments[-1] = CropAssignment(46, "21", 0.9, "21", 0.9, review=True, fragment=True)
    image, layout = render_karyogram(crops, assignments, title="46,XY")
    x, y, w, h = layout.boxes[-1]
    center_x, baseline = layout.group_centers[NOT_COUNTED]
    assert y + h == baseline == layout.group_centers["Y"][1]  # on the last row ...
    assert x > max(bx + bw for bx, by, bw, bh in layout.boxes[:-1] if by + bh == baseline)  # ... right of Y
    assert len([b for b, a in zip(layout.boxes, assignments) if a.label == "21" and not a.fragment]) == 2
    ring = np.concatenate([image[y - 2, x - 2 : x + w + 2], image[y + h + 1, x - 2 : x + w + 2]])
    assert is_red(ring).mean() > 0.9
    assert NOT_COUNTED not in layout_karyogram([c.shape for c in crops[:-1]], assignments[:-1]).group_centers


def test_mismatched_inputs_are_refused():
    crops, assignments = make_cell(MALE)
    with pytest.raises(ValueError, match="46 crops for 45 assignments"):
        render_karyogram(crops, assignments[:-1])
