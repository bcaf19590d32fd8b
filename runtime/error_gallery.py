"""The crops a bundle gets wrong on a labeled set, drawn (`karyo evaluate --errors PNG`).

A confusion matrix says that 4 and 5 are confused; before trusting a figure, or a model on its own
patients, a lab and an ML engineer want to see those crops: blurred, bent, two chromosomes in one
box, a speck, or a label that looks wrong (`karyo audit` goes after those). Errors are counted
where the figure a lab relies on is made: after cell assembly for crops whose cell is known (the
crops `crop_accuracy_assembled` counts wrong, a fragment placed as no chromosome among them), from
the image alone otherwise. They are grouped by (true, called) pair, commonest first, each crop
drawn as the model read it (found, cut to the chromosome, turned if it was read turned) on one
scale, so a small 21 stays small; a red box marks a crop flagged for review, which a reviewer
would have been shown, and no box a silent error. A CSV beside the picture lists every wrong crop.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .bundle import atomic_write_text
from .karyogram import FONT, REVIEW_COLOR, TEXT_COLOR, display_gray
from .plots import write_png
from .preprocess import ImageError, crop_as_read

if TYPE_CHECKING:
    from .bundle import Bundle
    from .evaluate import EvaluationResult

NOT_COUNTED = "not counted"  # what a fragment is called: assembly placed it as no chromosome
MAX_DRAWN = 400  # past this the picture is too large to look at; the CSV still lists every crop
CANVAS_WIDTH = 1200
TILE_HEIGHT = 110  # the tallest crop drawn; the others at the same scale
MARGIN, GAP, HEADER, CAPTION = 16, 8, 30, 16


@dataclass(frozen=True)
class WrongCrop:
    path: str
    cell: str | None  # None: no cell known, so counted from the image alone
    truth: str
    called: str
    probability: float  # of the called label, on the evidence it was called from (0 for a fragment)
    flagged: bool  # a red box in the karyogram: the reviewer is shown it
    turned: bool  # read turned half a circle (drawn so)


def wrong_crops(result: EvaluationResult, precision: str | None = None) -> list[WrongCrop]:
    """Every crop of the evaluation called wrong at `precision` (default: the headline one), as the
    JSON counts it: for crops in known cells, from the cells as the evaluation assembled them."""
    precision = precision or result.primary
    labels, probs = result.labels, result.probs[precision]
    turned = result.turned.get(precision, np.zeros(len(probs), dtype=bool))
    readings = result.readings.get(precision)
    celled = result.cell_rows if readings is not None else []  # a binary scheme is never assembled
    out: list[WrongCrop] = []
    in_cell = set(celled)
    for row in (i for i in range(len(probs)) if i not in in_cell):
        top = int(np.argmax(probs[row]))
        sample = result.samples[row]
        if labels.labels[top] != sample.label:
            out.append(WrongCrop(str(sample.path), None, sample.label, labels.labels[top], float(probs[row, top]), False,
                                 bool(turned[row])))
    if readings is not None:
        for key, rows in readings.cells.items():
            for local, assignment in zip(rows, readings.calls[key].assignments):
                row = celled[local]
                sample = result.samples[row]
                called = NOT_COUNTED if assignment.fragment else assignment.label
                if called != sample.label:
                    p = 0.0 if assignment.fragment else float(readings.sized[local, labels.index(called)])
                    out.append(WrongCrop(str(sample.path), key, sample.label, called, p, bool(assignment.review),
                                         bool(turned[row])))
    return out


def grouped(crops: list[WrongCrop], order: tuple[str, ...]) -> list[list[WrongCrop]]:
    """By (truth, called); the pairs of two look-alikes together (a 4 called 5 beside a 5 called 4,
    the exchanges assembly still makes), commonest first, then in the scheme's order; within a
    pair, by path."""
    rank = {label: k for k, label in enumerate(order + (NOT_COUNTED,))}
    counts = Counter((c.truth, c.called) for c in crops)
    both = Counter()
    for (truth, called), n in counts.items():
        both[frozenset((truth, called))] += n
    pairs = sorted(counts, key=lambda pair: (-both[frozenset(pair)], sorted(rank.get(x, 99) for x in pair),
                                             -counts[pair], rank.get(pair[0], 99)))
    return [sorted((c for c in crops if (c.truth, c.called) == pair), key=lambda c: c.path) for pair in pairs]


def _header(crops: list[tuple[WrongCrop, np.ndarray]]) -> str:
    first = crops[0][0]
    return f"true {first.truth}, called {first.called}: {len(crops)}"


def render_gallery(groups: list[list[tuple[WrongCrop, np.ndarray]]], title: list[str], width: int = CANVAS_WIDTH,
                   tile_height: int = TILE_HEIGHT) -> np.ndarray:
    """The picture: the title's lines, then one block per (true, called) pair (a header line, its
    crops, uint8 gray, in a row under it, wrapped when wider than the page), blocks side by side
    while they fit."""
    tallest = max((image.shape[0] for group in groups for _, image in group), default=1)
    scale = tile_height / tallest
    room = width - 2 * MARGIN
    blocks = []  # per group: (block width, block height, [(scaled image, x, y within the block, crop)])
    for group in groups:
        placed, x, y, row_height, block_width = [], 0, HEADER, 0, cv2.getTextSize(_header(group), FONT, 0.5, 1)[0][0]
        for crop, image in group:
            h, w = max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))
            slot = max(w, 34)  # room for the caption under a narrow crop
            if x and x + slot > room:
                x, y, row_height = 0, y + row_height + CAPTION + GAP, 0
            interpolation = cv2.INTER_AREA if h < image.shape[0] else cv2.INTER_LINEAR
            placed.append((cv2.resize(image, (w, h), interpolation=interpolation), x + (slot - w) // 2, y, crop))
            x, row_height, block_width = x + slot + GAP, max(row_height, h), max(block_width, x + slot)
        blocks.append((block_width, y + row_height + CAPTION, placed, _header(group)))
    positions, x, y, band = [], 0, 22 * len(title) + 8, 0
    for block_width, block_height, _, _ in blocks:
        if x and x + block_width > room:
            x, y, band = 0, y + band + GAP * 2, 0
        positions.append((MARGIN + x, MARGIN + y))
        x, band = x + block_width + 3 * GAP, max(band, block_height)
    canvas = np.full((MARGIN * 2 + y + band, width, 3), 255, dtype=np.uint8)
    for k, line in enumerate(title):
        cv2.putText(canvas, line, (MARGIN, MARGIN + 16 + 22 * k), FONT, 0.55, TEXT_COLOR, 1, cv2.LINE_AA)
    for (left, top), (_, _, placed, header) in zip(positions, blocks):
        cv2.putText(canvas, header, (left, top + HEADER - 12), FONT, 0.5, TEXT_COLOR, 1, cv2.LINE_AA)
        for image, x, y, crop in placed:
            h, w = image.shape[:2]
            canvas[top + y:top + y + h, left + x:left + x + w] = image[:, :, None]
            if crop.flagged:
                cv2.rectangle(canvas, (left + x - 2, top + y - 2), (left + x + w + 1, top + y + h + 1), REVIEW_COLOR, 2)
            caption = f"{crop.probability:.2f}"
            (tw, _), _ = cv2.getTextSize(caption, FONT, 0.35, 1)
            cv2.putText(canvas, caption, (left + x + (w - tw) // 2, top + y + h + 12), FONT, 0.35, TEXT_COLOR, 1,
                        cv2.LINE_AA)
    return canvas


def write_error_gallery(result: EvaluationResult, bundle: Bundle, path: str | Path, precision: str | None = None,
                        max_drawn: int = MAX_DRAWN) -> tuple[Path, Path, list[WrongCrop], int]:
    """Draw the wrong crops to `path` (PNG) and list them in the CSV beside it (same name, .csv);
    returns both paths, the wrong crops and how many were drawn. Written atomically."""
    path = Path(path)
    precision = precision or result.primary
    crops = wrong_crops(result, precision)
    drawn: list[list[tuple[WrongCrop, np.ndarray]]] = []
    shown: set[int] = set()
    for group in grouped(crops, result.labels.labels):
        kept = []
        for crop in group:
            if len(shown) >= max_drawn:
                break
            try:
                image = crop_as_read(crop.path, bundle.spec, crop.turned)
            except ImageError:  # changed since it was read: listed, not drawn
                continue
            kept.append((crop, display_gray(image)))  # the model's float range as 8-bit gray, dark on white
            shown.add(id(crop))
        if kept:
            drawn.append(kept)
    where = "after cell assembly" if any(c.cell for c in crops) else "image alone"
    n = len(result.samples)
    title = [f"{bundle.path.name} {precision}: {len(crops)} of {n} crops wrong ({where}), {len(shown)} drawn",
             "red box: flagged for review (no box: a silent error); under each crop: the probability of the label called"]
    write_png(render_gallery(drawn, title), path)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=[*WrongCrop.__dataclass_fields__, "drawn"], lineterminator="\n")
    writer.writeheader()
    for crop in (c for group in grouped(crops, result.labels.labels) for c in group):
        writer.writerow({**asdict(crop), "cell": crop.cell or "", "probability": f"{crop.probability:.4f}",
                         "drawn": id(crop) in shown})
    listing = atomic_write_text(path.with_suffix(".csv"), table.getvalue())
    return path, listing, crops, len(shown)


__all__ = ["NOT_COUNTED", "WrongCrop", "grouped", "render_gallery", "write_error_gallery", "wrong_crops"]
