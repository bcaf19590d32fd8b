"""Finding the chromosome a crop was cut for: the objects on its paper (read in
`karyo.runtime.paper`), which one is the chromosome and which are neighbours, its turn upright and
its size.

Split from `karyo.runtime.preprocess`, which turns what this finds into the model input: this is
the part that decides *what* the model looks at, and the part a lab whose crops are cut as
bounding boxes depends on. Everything here works in the crop's own pixels.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from .paper import percentile_of

# A crop in which no pixel differs from the paper by this many grey levels (of 255) holds nothing to
# read: an empty cut, a blank frame. Real crops are far from it: the faintest of the 20,322 here
# reaches 52 levels from its background.
BLANK_CONTRAST = 8.0


# How far off centre a crop may hold its chromosome before `beyond_mirrored_margin` cuts: this
# many pixels plus this fraction of the side. Kept small, since a merged neighbour's piece lies
# just outside it: pki-dev's crops sit within 2 px of centre (99th percentile), pampaj7's up to
# 6 px across the width, and a cut that shallow stays inside the 2 px kept around the chromosome
# (the step changes the input of 105 of pampaj7's 2,806 crops, by 0.0005 of its range, median).
CENTRING_SLACK_PX = 2
CENTRING_SLACK_FRACTION = 0.05


def beyond_mirrored_margin(mask: np.ndarray) -> np.ndarray | None:
    """The pixels of `mask`'s object that a crop cut centred on it could not hold, or None.

    A neighbour that touches the chromosome merges with it into one object, and blanking separate
    intruders cannot reach it; the merged object then spans the crop to the edge the neighbour came
    through while the opposite edge keeps its margin. A crop cut around the chromosome shows no such
    asymmetry, so along that axis whatever lies beyond the mirror image of the kept margin (less a
    slack for crops cut a little off centre) is the neighbour's. A crop whose object reaches both
    edges of an axis, or neither, is left alone.
    """
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        return None
    beyond = np.zeros(mask.shape, bool)
    for axis, (low, high) in enumerate(((rows.min(), rows.max() + 1), (cols.min(), cols.max() + 1))):
        side = mask.shape[axis]
        before, after = int(low), int(side - high)
        if min(before, after) > 0:
            continue
        depth = int(max(before, after) - CENTRING_SLACK_PX - CENTRING_SLACK_FRACTION * side)
        if depth <= 0:
            continue
        band = [slice(None), slice(None)]
        band[axis] = slice(0, depth) if before == 0 else slice(side - depth, side)
        beyond[tuple(band)] = True
    beyond &= mask
    return beyond if beyond.any() and not np.array_equal(beyond, mask) else None


def solidity(mask: np.ndarray) -> float:
    """The share of its convex hull's pixels that `mask`'s object fills (1.0 for a convex object).

    The hull is drawn on the pixel grid rather than measured as a polygon, whose area runs about
    half a perimeter short of the pixels it covers, which would rate a thin chromosome more solid
    than a thick one.
    """
    points = cv2.findNonZero(mask.astype(np.uint8))
    if points is None:
        return 0.0
    hull = np.zeros(mask.shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    return float(np.count_nonzero(mask)) / float(max(np.count_nonzero(hull), 1))


# How much more convex (`solidity`) the chromosome's object must be without the part beyond the
# mirrored margin for that part to count as a merged neighbour (`label_objects`). Chosen on fold 1's
# held-out crops, each the centred cut touches read by the fold's bundle with and without the cut:
# against cutting always, 0.02 reads 1 crop fewer right among those with a neighbour merged in
# (benchmarks/bbox_robustness.py's bounding boxes), 2 fewer among tilted ones, and 12 more of a
# set with 0 to 12 px of paper on each side apart; fold 2, checked after: -4, -2, +7 (0.03: -4, -2,
# +14 on fold 1, -7, -5, +8 on fold 2). benchmarks/ACCURACY.md, Crops cut as bounding boxes.
DEFAULT_NEIGHBOUR_CONVEXITY = 0.02


def _box_stats(mask: np.ndarray) -> list[int]:
    """A row of `cv2.connectedComponentsWithStats`' stats for `mask`: left, top, width, height, area."""
    rows, cols = np.nonzero(mask)
    return [int(cols.min()), int(rows.min()), int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1), int(len(rows))]


# The closing that keeps a chromosome one object across a pale band or its centromere (`label_objects`).
CLOSING_PX = 5
_CLOSING = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (CLOSING_PX, CLOSING_PX))


def label_objects(
    gray: np.ndarray,
    background: float,
    centred: bool = False,
    paper_past_edge: bool = False,
    neighbour_convexity: float | None = None,
) -> tuple[np.ndarray, np.ndarray, int, list[int], int | None] | None:
    """Label the objects of a crop: (labels, stats, main, intruders, cut_off), or None for a blank crop.

    Objects are what differs from the background by more than half the Otsu level (low, so the
    pale bands of a chromosome stay part of it), closed by 5 px so a centromere constriction or a
    pale band does not cut one chromosome in two. The largest object is the chromosome; another
    object is an intruder if it enters through the crop's edge, which is how a neighbour shows up
    in a bounding box (a piece inside the margin, like a satellite, belongs to the chromosome).
    With `centred`, the part of the chromosome's object beyond the mirrored margin (a neighbour
    merged into it, see `beyond_mirrored_margin`) becomes one more intruder, `cut_off` its label.
    Given `neighbour_convexity`, only if the object without that part is more convex by at least
    that much (in `solidity`; DEFAULT_NEIGHBOUR_CONVEXITY); None cuts any such part. A neighbour
    touching the chromosome at an angle makes the pair a crooked shape, while a chromosome that lies
    against one edge of a crop cut with paper on the other sides (uneven margins, cut by hand) is
    one body, as convex with its side as without it.

    With `paper_past_edge` the closing reads paper beyond the crop's edge. OpenCV's erosion reads
    object there, so a chromosome cut flush with the edge (every pki-dev crop) keeps the pixels its
    dilation added along that edge: about 8% more area than the same chromosome with paper around it
    (median of every 20th held-out crop of fold 1), which skews its size against cell-mates cut with
    a margin.
    """
    distance = np.abs(gray - background)
    peak = float(distance.max())
    if peak < BLANK_CONTRAST:
        return None
    scaled = np.clip(distance * (255.0 / peak), 0, 255).astype(np.uint8)
    otsu, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = (scaled > otsu * 0.5).astype(np.uint8)
    if paper_past_edge:
        pad = CLOSING_PX // 2
        padded = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        mask = np.ascontiguousarray(cv2.morphologyEx(padded, cv2.MORPH_CLOSE, _CLOSING)[pad:-pad, pad:-pad])
    else:
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _CLOSING)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:
        return None
    main = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    height, width = gray.shape
    left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    right, bottom = left + stats[:, cv2.CC_STAT_WIDTH], top + stats[:, cv2.CC_STAT_HEIGHT]
    touches_edge = (left == 0) | (top == 0) | (right == width) | (bottom == height)
    intruders = [k for k in range(1, count) if k != main and touches_edge[k]]
    # an object that reaches no edge has no asymmetry to cut: most crops, so skip the mask there
    beyond = beyond_mirrored_margin(labels == main) if centred and touches_edge[main] else None
    if beyond is not None and neighbour_convexity is not None:
        whole = labels == main
        if solidity(whole & ~beyond) - solidity(whole) < neighbour_convexity:
            beyond = None
    if beyond is None:
        return labels, stats, main, intruders, None
    labels[beyond] = count
    stats = np.vstack([stats, np.array([_box_stats(beyond)], stats.dtype)])
    stats[main] = _box_stats(labels == main)
    intruders.append(count)
    return labels, stats, main, intruders, count


# A chromosome's size in source pixels: (length along its longer side, area of its objects).
# Absolute sizes differ between labs and between metaphases (resolution, condensation); the size
# relative to the other chromosomes of the same cell does not, see `karyo.runtime.cell_size`.
ChromosomeSize = tuple[float, float]


# Tilts up to this many degrees are left alone: training rotates crops by up to 8 degrees anyway,
# and turning a nearly upright chromosome would only blur its bands by interpolation.
ALIGN_MIN_TILT_DEG = 10.0
ALIGN_WINDOW_PX = 2  # paper taken along around the chromosome's box when it is turned
# Paper kept round the chromosome by the cut of bundles trained before `margin_invariant`.
LEGACY_CUT_MARGIN_PX = 2


def major_axis_tilt(mask: np.ndarray) -> float | None:
    """Degrees to turn `mask`'s object (counter-clockwise as displayed) to stand it upright, in (-90, 90].

    The major axis of the object's second moments: for a straight chromosome its length, for a
    bent one the chord between its ends. None when the object has no direction (a round blob).
    """
    m = cv2.moments(mask.astype(np.uint8), binaryImage=True)
    spread = np.hypot(m["mu20"] - m["mu02"], 2.0 * m["mu11"])
    if m["m00"] == 0 or spread <= 0.05 * (m["mu20"] + m["mu02"]):  # `<=`: a lone pixel has no spread at all
        return None
    axis = 0.5 * np.degrees(np.arctan2(2.0 * m["mu11"], m["mu20"] - m["mu02"]))  # clockwise from +x, [-90, 90]
    return float(axis - 90.0 if axis > 0 else axis + 90.0)


def rotate_whole(image: np.ndarray, degrees: float, fill: float, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """`image` turned `degrees` counter-clockwise (as displayed) on a canvas grown to hold all of it,
    the new corners filled with `fill`."""
    height, width = image.shape[:2]
    rotation = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), degrees, 1.0)
    cos, sin = abs(rotation[0, 0]), abs(rotation[0, 1])
    new_w, new_h = int(np.ceil(width * cos + height * sin)), int(np.ceil(width * sin + height * cos))
    rotation[0, 2] += (new_w - width) / 2.0
    rotation[1, 2] += (new_h - height) / 2.0
    return cv2.warpAffine(
        image, rotation, (new_w, new_h), flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=float(fill)
    )


def align_upright(
    gray: np.ndarray, mask: np.ndarray, background: float, min_tilt: float = ALIGN_MIN_TILT_DEG
) -> tuple[np.ndarray, np.ndarray] | None:
    """Turn the crop so the chromosome in `mask` stands upright: (gray, mask) turned alike, or None
    when it already stands within `min_tilt` degrees (or has no direction) and is left as it is.

    Which end ends up on top is not known (a straightened crop puts the p arm there; a lying one
    gives no hint), so of the two upright poses this takes the smaller turn.
    """
    turn = major_axis_tilt(mask)
    if turn is None or abs(turn) <= min_tilt:
        return None
    turned_mask = rotate_whole(mask.astype(np.uint8), turn, 0, cv2.INTER_NEAREST)
    if not turned_mask.any():  # an object a pixel or two across can fall between the turned grid's samples
        return None
    return rotate_whole(gray, turn, background), turned_mask


class FoundChromosome(NamedTuple):
    """What one labelling of a crop's objects yields, so the hot path labels each crop once."""

    gray: np.ndarray
    size: ChromosomeSize | None
    stain: float | None  # 95th percentile of the main object's darkness, a fraction of the background


def find_chromosome(
    gray: np.ndarray,
    background: float,
    blank: bool,
    tight: bool,
    align: bool = False,
    stain: bool = False,
    centred: bool = False,
    margin_invariant: bool = False,
    neighbour_convexity: float | None = None,
) -> FoundChromosome:
    """The chromosome a crop was cut for: the crop with the neighbours that reach into it blanked
    (`blank`), cut down to the chromosome (`tight`), turned upright (`align`, `align_upright`),
    plus its size and, with `stain`, its stain (a fifth of the preprocessing time, so only when
    asked), all from the one object labelling they need.

    Cutting matters as much as blanking: the model reads a chromosome's length from how much of the
    box it fills, and a lab that leaves wide margins (or a bounding box stretched by a neighbour)
    would otherwise show every chromosome smaller than it is. With `margin_invariant` the cut keeps
    no paper: it is the box of the chromosome's objects, widened by a part `centred` cut off when
    blanking left all of it standing (a crop cut a few pixels off centre: the chromosome's own side,
    not a neighbour), and objects are closed with paper past the edge (`label_objects`); without
    it, as older bundles were trained, LEGACY_CUT_MARGIN_PX of paper are kept round the chromosome,
    which covered such a side. Given `neighbour_convexity`, the `centred` cut is made only where it
    leaves a chromosome that much more convex (`label_objects`). The length is measured after
    turning, so a tilted chromosome is not measured by the shorter side of its bounding box."""
    found = label_objects(
        gray, background, centred=centred and blank, paper_past_edge=margin_invariant,
        neighbour_convexity=neighbour_convexity,
    )
    if found is None:
        return FoundChromosome(gray, None, None)
    labels, stats, main, intruders, cut_off = found
    level = None
    if stain:
        darkness = (np.float32(background) - gray[labels == main]) / np.float32(max(background, 1.0))
        level = percentile_of(darkness, 95.0) if darkness.size else None
    kept = [k for k in range(1, len(stats)) if k not in intruders]
    area = float(sum(stats[k, cv2.CC_STAT_AREA] for k in kept))
    left_standing = False  # blanking left all of the part `centred` cut off, beside the chromosome
    if blank and intruders:
        blank_mask = np.isin(labels, intruders).astype(np.uint8)
        keep = cv2.dilate((labels == main).astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2)
        blank_mask = cv2.dilate(blank_mask, np.ones((3, 3), np.uint8), iterations=1) & (1 - keep)
        gray = np.where(blank_mask > 0, np.float32(background), gray).astype(np.float32)
        left_standing = margin_invariant and cut_off is not None and not np.any((labels == cut_off) & (keep == 0))
    x0 = int(min(stats[k, cv2.CC_STAT_LEFT] for k in kept))
    y0 = int(min(stats[k, cv2.CC_STAT_TOP] for k in kept))
    x1 = int(max(stats[k, cv2.CC_STAT_LEFT] + stats[k, cv2.CC_STAT_WIDTH] for k in kept))
    y1 = int(max(stats[k, cv2.CC_STAT_TOP] + stats[k, cv2.CC_STAT_HEIGHT] for k in kept))
    cut = (x0, y0, x1, y1)  # what `tight` keeps of an unturned crop: the size stays the chromosome's
    if left_standing:
        lx, ly, lw, lh = (int(v) for v in stats[cut_off, :4])
        cut = (min(x0, lx), min(y0, ly), max(x1, lx + lw), max(y1, ly + lh))
    turned = None
    if align:
        # turn only the chromosome's box (plus a little paper): a crop with wide margins, or a whole
        # metaphase passed by mistake, would otherwise be rotated in full
        lookup = np.zeros(len(stats), np.uint8)
        lookup[kept] = 1
        top, left = max(0, y0 - ALIGN_WINDOW_PX), max(0, x0 - ALIGN_WINDOW_PX)
        window = (slice(top, y1 + ALIGN_WINDOW_PX), slice(left, x1 + ALIGN_WINDOW_PX))
        turned = align_upright(gray[window], lookup[labels[window]], background)  # lookup: np.isin is slower
    if turned is not None:
        gray, turned_mask = turned
        x0, y0, box_w, box_h = cv2.boundingRect(turned_mask)
        x1, y1 = x0 + box_w, y0 + box_h
        cut = (x0, y0, x1, y1)
    size = (float(max(x1 - x0, y1 - y0)), area)
    if tight or turned is not None:  # a turned crop's corners are padding: always cut it back
        margin = 0 if margin_invariant else LEGACY_CUT_MARGIN_PX
        height, width = gray.shape
        left, top, right, bottom = cut
        gray = gray[max(0, top - margin) : min(height, bottom + margin), max(0, left - margin) : min(width, right + margin)]
    return FoundChromosome(gray, size, level)
