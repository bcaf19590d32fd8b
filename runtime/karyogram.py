"""Karyogram PNG: one cell's crops in the standard clinical arrangement, drawn with OpenCV.

Rows 1-5, 6-12, 13-18 and 19-22 + X, Y; each chromosome's copies side by side (pairs first,
extra copies after, variants after the normal copies) standing on a common baseline with the
chromosome number under them. All crops share one scale, so a small 21 stays small next to a
large 1, which is part of what a cytogeneticist checks. Crops the assembly overrode or was
unsure about (``review``) get a red box with, under it, the label to weigh against the one given
(``alternative``, e.g. "5?" under a 4 that may be swapped with a 5): a box alone says where to look,
not what to look for. Crops a person has labelled on review (``corrected``) get a blue box instead:
what stands there is theirs, and whoever signs the cell out sees which crops were set by hand.
Objects too small for a whole chromosome (``fragment``) stand apart at the end of the last row,
under "not counted". The karyotype call is the title; under it, the cell's name (its patient and
cell as the scanner exported them, or the folder it was read from), since a karyogram copied into a
report or onto a slide must still say whose it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .assembly import CropAssignment
from .labels import STRUCTURAL, chromosome_of
from .plots import write_png

ROWS: tuple[tuple[str, ...], ...] = (
    ("1", "2", "3", "4", "5"),
    ("6", "7", "8", "9", "10", "11", "12"),
    ("13", "14", "15", "16", "17", "18"),
    ("19", "20", "21", "22", "X", "Y"),
)
NOT_COUNTED = "not counted"  # the group of fragments: objects that fill no chromosome slot
REVIEW_COLOR = (0, 0, 255)  # BGR red
CORRECTED_COLOR = (200, 110, 0)  # BGR blue: told apart from red by colour-blind readers too
TEXT_COLOR = (40, 40, 40)
FONT = cv2.FONT_HERSHEY_SIMPLEX
MARGIN = 20
TITLE_HEIGHT = 50
SUBTITLE_HEIGHT = 22  # the cell's name under the title, when given
SUBTITLE_SIZE = 0.5
LABEL_HEIGHT = 26
VARIANT_HEIGHT = 16
LEGEND_HEIGHT = 26
LEGEND_SIZE = 0.45
HINT_SIZE = 0.4
CROP_GAP = 8
HINT_GAP = 4  # at least this much between the hints of neighbouring crops, besides CROP_GAP
GROUP_GAP = 28


@dataclass(frozen=True)
class KaryogramLayout:
    """Where everything goes: canvas size, scale, and each crop's box (x, y, w, h) in input order."""

    width: int
    height: int
    scale: float
    boxes: list[tuple[int, int, int, int]]
    group_centers: dict[str, tuple[int, int]]  # chromosome -> (x of label centre, y of baseline)
    hint_offset: int | None = None  # below a tile's bottom: where its review hint goes (None: no hints)
    legend: tuple[str, ...] = ()  # the lines the canvas was sized for (see legend_lines)


def display_gray(crop: np.ndarray) -> np.ndarray:
    """uint8 gray, dark chromosome on white: crops that come light-on-dark are inverted for display."""
    gray = np.asarray(crop, dtype=np.float32)
    if gray.ndim == 3:
        gray = gray[..., :3].mean(axis=2)
    if gray.size and gray.max() <= 1.0:
        gray = gray * 255.0
    gray = np.clip(gray, 0, 255).astype(np.uint8)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return 255 - gray if float(np.median(border)) < 128 else gray


def _order_key(assignment: CropAssignment, position: int) -> tuple[int, str, int]:
    return (1 if assignment.label in STRUCTURAL else 0, assignment.label, position)


def layout_karyogram(
    sizes: Sequence[tuple[int, int]],
    assignments: Sequence[CropAssignment],
    tile_height: int = 120,
    title: str = "",
    legend: Sequence[str] | None = None,
    subtitle: str = "",
) -> KaryogramLayout:
    """Place crops of the given (height, width) sizes; pure geometry, so tests can check positions.
    `legend`: lines saying what the red marks mean, when not the review's (``legend_lines``);
    `subtitle`: the cell's name, on a line of its own under the title."""
    if len(sizes) != len(assignments):
        raise ValueError(f"{len(sizes)} crops for {len(assignments)} assignments")
    tallest = max((h for h, _ in sizes), default=1)
    scale = tile_height / max(tallest, 1)
    scaled = [(max(1, round(h * scale)), max(1, round(w * scale))) for h, w in sizes]
    typical_width = int(np.median([w for _, w in scaled])) if scaled else tile_height // 3
    rows = ROWS
    if any(a.fragment for a in assignments):
        rows = ROWS[:-1] + (ROWS[-1] + (NOT_COUNTED,),)
    members: dict[str, list[int]] = {c: [] for row in rows for c in row}
    for position, assignment in enumerate(assignments):
        members[NOT_COUNTED if assignment.fragment else chromosome_of(assignment.label)].append(position)
    for chromosome in members:
        members[chromosome].sort(key=lambda p: _order_key(assignments[p], p))
    has_variants = any(a.label in STRUCTURAL for a in assignments)
    has_hints = any(_hint(a) for a in assignments)
    # a hinted crop gets a slot as wide as its hint, so the hints of two narrow neighbours never run together
    slots = [max(w, _hint_width(a) + HINT_GAP if _hint(a) else 0) for (_, w), a in zip(scaled, assignments)]

    def group_width(chromosome: str) -> int:
        widths = [slots[p] for p in members[chromosome]]
        content = sum(widths) + CROP_GAP * max(0, len(widths) - 1)
        label_width = cv2.getTextSize(chromosome, FONT, 0.5, 1)[0][0] + 8  # "not counted" is wider than "22"
        return max(content, 2 * typical_width + CROP_GAP, 30, label_width)

    row_widths = [sum(group_width(c) for c in row) + GROUP_GAP * (len(row) - 1) for row in rows]
    title_width = max(cv2.getTextSize(title, FONT, 0.8, 2)[0][0] if title else 0,
                      cv2.getTextSize(subtitle, FONT, SUBTITLE_SIZE, 1)[0][0] if subtitle else 0)
    legend = legend_lines(assignments) if legend is None else list(legend)
    legend_width = max((cv2.getTextSize(line, FONT, LEGEND_SIZE, 1)[0][0] for line in legend), default=0)
    width = max(max(row_widths), title_width, legend_width) + 2 * MARGIN
    boxes: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)] * len(sizes)
    centers: dict[str, tuple[int, int]] = {}
    y = title_band(subtitle)
    for row, row_width in zip(rows, row_widths):
        row_height = max([scaled[p][0] for c in row for p in members[c]] or [tile_height // 2])
        baseline = y + row_height
        spare = (width - 2 * MARGIN - row_width) / max(1, len(row) - 1) if len(row) > 1 else 0
        x = float(MARGIN)
        for chromosome in row:
            gw = group_width(chromosome)
            widths = [slots[p] for p in members[chromosome]]
            content = sum(widths) + CROP_GAP * max(0, len(widths) - 1)
            cx = int(round(x + (gw - content) / 2))
            for p in members[chromosome]:
                h, w = scaled[p]
                boxes[p] = (cx + (slots[p] - w) // 2, baseline - h, w, h)
                cx += slots[p] + CROP_GAP
            centers[chromosome] = (int(round(x + gw / 2)), baseline)
            x += gw + GROUP_GAP + spare
        y = baseline + LABEL_HEIGHT + VARIANT_HEIGHT * (int(has_variants) + int(has_hints)) + 12
    height = y + LEGEND_HEIGHT * max(1, len(legend))
    hint_offset = LABEL_HEIGHT + (VARIANT_HEIGHT if has_variants else 0) if has_hints else None
    return KaryogramLayout(int(width), int(height), scale, boxes, centers, hint_offset, tuple(legend))


def title_band(subtitle: str = "") -> int:
    """Height above the first row: the title, and the cell's name under it when there is one."""
    return TITLE_HEIGHT + (SUBTITLE_HEIGHT if subtitle else 0)


def legend_lines(assignments: Sequence[CropAssignment]) -> list[str]:
    """The legend under the karyogram: what the coloured marks mean, only for marks that are drawn."""
    lines = []
    reviews = sum(a.review for a in assignments)
    if reviews:
        lines.append(f"red box: {reviews} crop(s) to review (top-1 overridden, a close call, a possible swap, or not counted)")
    if any(_hint(a) and not a.joined for a in assignments):
        lines.append('red "5?" under a box: the label to weigh against the one it is placed as')
    if any(_hint(a) and a.joined for a in assignments):
        lines.append('red "+21?" under a box: the crop may hold a 21 as well (two chromosomes cut as one)')
    corrected = sum(a.corrected for a in assignments)
    if corrected:
        lines.append(f"blue box: {corrected} crop(s) labelled on review")
    return lines


def _hint(assignment: CropAssignment) -> str:
    """What to look for in a red box: "5?" (the alternative label), "+21?" (a 21 joined to it); empty
    when there is none."""
    if not assignment.review or assignment.fragment or not assignment.alternative:
        return ""
    return f"{assignment.check_against}?"


def _hint_width(assignment: CropAssignment) -> int:
    return cv2.getTextSize(_hint(assignment), FONT, HINT_SIZE, 1)[0][0]


def _put_centered(image: np.ndarray, text: str, center_x: int, top: int, size: float, thickness: int,
                  color: tuple[int, int, int] = TEXT_COLOR) -> None:
    (tw, th), _ = cv2.getTextSize(text, FONT, size, thickness)
    cv2.putText(image, text, (int(center_x - tw / 2), int(top + th)), FONT, size, color, thickness, cv2.LINE_AA)


def render_karyogram(
    crops: Sequence[np.ndarray],
    assignments: Sequence[CropAssignment],
    title: str = "",
    tile_height: int = 120,
    legend: Sequence[str] | None = None,
    subtitle: str = "",
) -> tuple[np.ndarray, KaryogramLayout]:
    """The karyogram as a BGR uint8 image, plus the layout it was drawn with."""
    grays = [display_gray(c) for c in crops]
    layout = layout_karyogram([g.shape[:2] for g in grays], assignments, tile_height, title, legend, subtitle)
    image = np.full((layout.height, layout.width, 3), 255, dtype=np.uint8)
    if title:
        _put_centered(image, title, layout.width // 2, 12, 0.8, 2)
    if subtitle:
        _put_centered(image, subtitle, layout.width // 2, TITLE_HEIGHT - 8, SUBTITLE_SIZE, 1)
    for gray, (x, y, w, h) in zip(grays, layout.boxes):
        interpolation = cv2.INTER_AREA if h < gray.shape[0] else cv2.INTER_LINEAR
        tile = cv2.resize(gray, (w, h), interpolation=interpolation)
        image[y : y + h, x : x + w] = tile[:, :, None]
    for chromosome, (cx, baseline) in layout.group_centers.items():
        cv2.line(image, (cx - 24, baseline + 3), (cx + 24, baseline + 3), TEXT_COLOR, 1)
        _put_centered(image, chromosome, cx, baseline + 7, 0.5, 1)
    for assignment, (x, y, w, h) in zip(assignments, layout.boxes):
        if assignment.label in STRUCTURAL:
            _put_centered(image, assignment.label, x + w // 2, y + h + LABEL_HEIGHT, 0.35, 1, (150, 60, 0))
    for assignment, (x, y, w, h) in zip(assignments, layout.boxes):
        if assignment.corrected:
            cv2.rectangle(image, (x - 2, y - 2), (x + w + 1, y + h + 1), CORRECTED_COLOR, 2)
    reviews = [(a, box) for a, box in zip(assignments, layout.boxes) if a.review]
    for assignment, (x, y, w, h) in reviews:
        cv2.rectangle(image, (x - 2, y - 2), (x + w + 1, y + h + 1), REVIEW_COLOR, 2)
        hint = _hint(assignment)
        if hint and layout.hint_offset is not None:
            _put_centered(image, hint, x + w // 2, y + h + layout.hint_offset, HINT_SIZE, 1, REVIEW_COLOR)
    for k, line in enumerate(layout.legend):
        bottom = layout.height - 9 - LEGEND_HEIGHT * (len(layout.legend) - 1 - k)
        color = CORRECTED_COLOR if line.startswith("blue") else REVIEW_COLOR
        cv2.putText(image, line, (MARGIN, bottom), FONT, LEGEND_SIZE, color, 1, cv2.LINE_AA)
    return image, layout


def draw_karyogram(
    crops: Sequence[np.ndarray],
    assignments: Sequence[CropAssignment],
    path: str | Path,
    title: str = "",
    tile_height: int = 120,
    legend: Sequence[str] | None = None,
    subtitle: str = "",
) -> Path:
    """Write the karyogram PNG of one cell (crops and assignments in the same order) atomically."""
    image, _ = render_karyogram(crops, assignments, title, tile_height, legend, subtitle)
    path = Path(path)
    write_png(image, path)
    return path
