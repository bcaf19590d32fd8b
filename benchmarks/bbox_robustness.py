"""How a bundle copes with crops cut as bounding boxes, with and without each focusing step.

Labs that cut crops as axis-aligned bounding boxes out of the metaphase get neighbours reaching
into the crop, and chromosomes lying at any angle (nobody straightened them). We have no such
data, so we make it from held-out clean crops: "bounding_box" places each crop on a wider canvas
of its own background and lays in a piece of another held-out chromosome (randomly rotated) so
that it enters through the canvas edge, as a neighbour would; "tilted" turns each crop by a
random angle in +-90 degrees and cuts it to the turned chromosome's box; "tilted_bounding_box"
does both; "pale" is each crop from a paler slide (its darkness below the paper times a random
0.55 to 0.85; pampaj7's chromosomes are about 0.73 times as dark as pki-dev's); "coarse" is each
crop as a camera with 0.5 to 0.8 times the pixels per side would take it (a lab imaging at lower
magnification: the same chromosome, fewer pixels across each band); "any_angle" turns each crop
by a random angle in +-180 degrees, as chromosomes cut out of the metaphase rather than out of a
karyogram lie, so about half of them reach the network p arm down (turning upright takes the
smaller turn: it cannot tell the p arm from the q arm); "black_corners" turns each crop by a
random angle in +-90 degrees on a canvas that holds it whole, the corners black, as a turning
tool exports it (the corners are read as paper: README, Design); "margined" gives each crop 2 to
16 px of its own paper on every side, as a lab that cuts with a margin does (karyotyping systems
cut flush: a bundle of preprocess spec 6 reads both alike, README, Design). The same bundle is
then scored on all nine with the focusing steps switched on one after the other
(`focus_main_object`, `tight_crop`, `align_axis`, `centred_crop`), so one run shows what each step costs on clean
crops (should be nothing) and what it buys on the others; a last row serves all steps with the
staining step toggled against the bundle's own (`stain_level`: off for a bundle trained with it,
at the default level for one trained without).

    python benchmarks/bbox_robustness.py BUNDLE MODEL/heldout --out runs/bbox

Writes `bbox.json` and `examples.png` (crops before/after focusing; real crops: do not commit).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from karyo.runtime.bundle import atomic_write_text, load_bundle
from karyo.runtime.classifier import Classifier
from karyo.runtime.dataset import read_labeled_folder
from karyo.runtime.focus import rotate_whole
from karyo.runtime.orientation import ORIENTATIONS
from karyo.runtime.paper import background_level
from karyo.runtime.preprocess import DEFAULT_STAIN_LEVEL, ImageError, load_gray, preprocess_gray


def with_neighbour(main: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`main` on a canvas 1.6x wider and 1.2x taller, with a rotated piece of `other` entering from a side."""
    background = background_level(main)
    height, width = main.shape
    canvas_h, canvas_w = int(height * 1.2) + 4, int(width * 1.6) + 8
    canvas = np.full((canvas_h, canvas_w), background, np.float32)
    top, left = (canvas_h - height) // 2, (canvas_w - width) // 2
    canvas[top : top + height, left : left + width] = main
    angle = float(rng.uniform(-60, 60))
    oh, ow = other.shape
    rotation = cv2.getRotationMatrix2D((ow / 2, oh / 2), angle, 1.0)
    side = int(np.hypot(oh, ow)) + 2
    rotation[:, 2] += (side - ow) / 2, (side - oh) / 2
    piece = cv2.warpAffine(other, rotation, (side, side), flags=cv2.INTER_LINEAR, borderValue=background_level(other))
    dark = (background_level(other) - piece) > 20  # the neighbour's own pixels, not its paper
    # the neighbour's centre sits just outside the left or right edge, so about half of it enters
    cy = int(rng.uniform(0.2, 0.8) * canvas_h)
    cx = -side // 4 if rng.random() < 0.5 else canvas_w + side // 4
    y0, x0 = cy - side // 2, cx - side // 2
    top_c, bottom_c = max(0, y0), min(canvas_h, y0 + side)  # the overlap of piece and canvas
    left_c, right_c = max(0, x0), min(canvas_w, x0 + side)
    if top_c >= bottom_c or left_c >= right_c:
        return canvas
    window = canvas[top_c:bottom_c, left_c:right_c]
    source = (slice(top_c - y0, bottom_c - y0), slice(left_c - x0, right_c - x0))
    paste = dark[source] & (window >= background - 20)  # never over the main chromosome
    window[paste] = piece[source][paste]
    return canvas


def tilted(main: np.ndarray, rng: np.random.Generator, margin: int = 3, half_turn: float = 90.0) -> np.ndarray:
    """`main` turned by a random angle in +-`half_turn` degrees and cut to the turned chromosome's box + `margin`."""
    background = background_level(main)
    turned = rotate_whole(main, float(rng.uniform(-half_turn, half_turn)), background)
    rows, cols = np.nonzero((background - turned) > 20)
    if len(rows) == 0:
        return turned
    return turned[
        max(0, rows.min() - margin) : rows.max() + 1 + margin, max(0, cols.min() - margin) : cols.max() + 1 + margin
    ]


def paler(main: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`main` as a slide stained 0.55 to 0.85 times as dark would show it (same paper, paler chromosome)."""
    background = background_level(main)
    return (background - (background - main) * np.float32(rng.uniform(0.55, 0.85))).astype(np.float32)


def margined(main: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`main` with 2 to 16 px of its own paper added on every side (one width all round)."""
    pad = int(rng.integers(2, 17))
    return cv2.copyMakeBorder(main, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=float(background_level(main)))


def coarser(main: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`main` at 0.5 to 0.8 times the pixels per side (area-averaged, as a coarser sensor integrates)."""
    factor = float(rng.uniform(0.5, 0.8))
    height, width = main.shape
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(main, size, interpolation=cv2.INTER_AREA)


# (name, focus_main_object, tight_crop, align_axis, centred_crop): each step on top of the previous one
SETTINGS = (
    ("plain", False, False, False, False),
    ("focus", True, False, False, False),
    ("focus_tight", True, True, False, False),
    ("focus_tight_align", True, True, True, False),
    ("focus_tight_align_centred", True, True, True, True),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("data", type=Path, help="labeled folder of held-out crops (e.g. MODEL/heldout)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--limit", type=int, default=3000, help="crops to use (a random, fixed subset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--orientation", choices=ORIENTATIONS, default=None,
                        help="read the crops this way up (default: the bundle's, as karyo does)")
    args = parser.parse_args(argv)

    bundle = load_bundle(args.bundle)
    classifier = Classifier(bundle, precision=args.precision, provider="cpu", orientation=args.orientation)
    samples = read_labeled_folder(args.data)
    rng = np.random.default_rng(args.seed)
    samples = [samples[i] for i in sorted(rng.permutation(len(samples))[: args.limit])]
    labels = bundle.labels
    truth = np.array([labels.index(s.label) for s in samples])
    grays = [load_gray(s.path) for s in samples]
    others = rng.permutation(len(grays))
    crowded = [with_neighbour(g, grays[int(j)], rng) for g, j in zip(grays, others)]
    turned = [tilted(g, rng) for g in grays]
    turned_crowded = [with_neighbour(g, grays[int(j)], rng) for g, j in zip(turned, others)]
    pale = [paler(g, rng) for g in grays]
    coarse = [coarser(g, rng) for g in grays]
    any_angle = [tilted(g, rng, half_turn=180.0) for g in grays]
    black_corners = [rotate_whole(g, float(rng.uniform(-90.0, 90.0)), 0.0) for g in grays]
    with_paper = [margined(g, rng) for g in grays]  # drawn last: the sets above stay as they were
    image_sets = (
        ("clean", grays), ("bounding_box", crowded), ("tilted", turned), ("tilted_bounding_box", turned_crowded),
        ("pale", pale), ("coarse", coarse), ("any_angle", any_angle), ("black_corners", black_corners),
        ("margined", with_paper),
    )
    figures: dict[str, float] = {}
    refused: dict[str, int] = {}
    toggled = None if bundle.spec.stain_level is not None else DEFAULT_STAIN_LEVEL
    stain_setting = "stain_off" if toggled is None else "stain_on"
    for setting, focus, tight, align, centred in (*SETTINGS, (stain_setting, True, True, True, True)):
        spec = dataclasses.replace(
            bundle.spec, focus_main_object=focus, tight_crop=tight, align_axis=align, centred_crop=centred
        )
        if setting == stain_setting:
            spec = dataclasses.replace(spec, stain_level=toggled)
        for name, images in image_sets:
            inputs, readable = [], []
            for g in images:
                try:
                    inputs.append(preprocess_gray(g, spec))
                    readable.append(True)
                except ImageError:  # refused (bright-on-dark, blank): counted as wrong, and counted
                    readable.append(False)
            predicted = np.full(len(images), -1)
            if inputs:
                predicted[np.array(readable)] = classifier.predict_tensors(np.stack(inputs)).argmax(axis=1)
            key = f"{name}_{setting}"
            figures[key] = float(np.mean(predicted == truth))
            refused[key] = len(images) - len(inputs)
            print(f"{key}: {figures[key]:.4f} ({refused[key]} refused)", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"bundle": str(args.bundle), "precision": args.precision, "orientation": classifier.orientation,
              "crops": len(samples), "accuracy": figures, "refused": refused,
              "bundle_preprocess": bundle.spec.to_dict()}
    atomic_write_text(args.out / "bbox.json", json.dumps(record, indent=2) + "\n")
    on = dataclasses.replace(bundle.spec, focus_main_object=True, tight_crop=True, align_axis=True, centred_crop=True)
    off = dataclasses.replace(bundle.spec, focus_main_object=False, tight_crop=False, align_axis=False, centred_crop=False)
    tiles = []
    for g in crowded[:6] + turned_crowded[:6]:
        pair = [preprocess_gray(g, off)[..., 0], preprocess_gray(g, on)[..., 0]]
        tiles.append(np.concatenate(pair + [np.zeros((pair[0].shape[0], 4), np.float32)], axis=1))
    sheet = np.concatenate(tiles, axis=1)
    cv2.imwrite(str(args.out / "examples.png"), np.clip(255 - sheet * 255, 0, 255).astype(np.uint8))
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
