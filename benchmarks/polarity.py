"""Which crops the preprocessing refuses as bright-on-dark, among real G-banded crops and fluorescence-like copies.

The model reads G-banded crops: dark bands on light paper. A fluorescence picture (DAPI, Q-bands)
or an export that inverted the gray levels shows the chromosome bright on a dark ground, and read
as G-bands it got confident wrong labels. The preprocessing refuses such a crop
(`karyo.runtime.paper.brighter_than_paper_share`); this measures both sides of that rule on every
crop of labeled folders: none of the real crops, nor of their copies padded with a tool's black
frame or turned inside black corners, may be refused; copies made bright-on-dark should be. The
framed copies are also scaled 0.8 with the frame ("black_frame_resized"), which blends its inner
edge into the picture; "outlined" has a red selection box (grey 76) drawn on its outermost
pixels. The turned copies are turned 30 degrees ("turned"), and by a hair: 0.5 and exactly 90
degrees ("turned_slightly", "turned_quarter"), where a tool leaves no black, only seams blended
with it.

We have no fluorescence crops, so they are made from the real ones: "dark_ground" inverts a crop
and sets its ground at 20 grey levels (a camera's dark offset), its bands kept at 0.8 of their
contrast ("dark_ground_framed": that inside a tool's black frame, "dark_ground_framed_resized":
then scaled 0.8); "black_ground" is its darkness below the paper, the ground masked to 0 as
segmenting tools export it; "black_ground_turned" turns that 30 degrees inside black corners.

    python benchmarks/polarity.py ../shared/data/pki-dev ../shared/data/pampaj7 [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from karyo.runtime.bundle import atomic_write_text
from karyo.runtime.dataset import read_labeled_folder
from karyo.runtime.paper import BRIGHT_ON_DARK_SHARE, background_level, brighter_than_paper_share, paper_filled
from karyo.runtime.preprocess import ImageError, PreprocessSpec, load_gray, preprocess_gray

# the copies that are still G-banded (none may be refused), then the bright-on-dark ones
G_BANDED = ("as_is", "black_frame", "black_frame_resized", "outlined", "turned", "turned_slightly", "turned_quarter")
BRIGHT_ON_DARK = ("dark_ground", "dark_ground_framed", "dark_ground_framed_resized", "black_ground", "black_ground_turned")


def turned(gray: np.ndarray, degrees: float = 30.0, fill: float = 0.0) -> np.ndarray:
    """`gray` turned inside a canvas that holds it whole, the corners black as a tool fills them (or `fill`)."""
    height, width = gray.shape
    rotation = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    cos, sin = abs(rotation[0, 0]), abs(rotation[0, 1])
    out_w, out_h = int(height * sin + width * cos) + 1, int(height * cos + width * sin) + 1
    rotation[:, 2] += (out_w - width) / 2, (out_h - height) / 2
    return cv2.warpAffine(gray, rotation, (out_w, out_h), flags=cv2.INTER_LINEAR, borderValue=fill)


def framed(gray: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """`gray` in a tool's black frame, then resized by `scale` (a fixed-size export), which blends the
    frame's inner edge into the picture."""
    frame = cv2.copyMakeBorder(gray, 12, 12, 9, 9, cv2.BORDER_CONSTANT, value=0)
    if scale == 1.0:
        return frame
    return cv2.resize(frame, (round(frame.shape[1] * scale), round(frame.shape[0] * scale)), interpolation=cv2.INTER_AREA)


def outlined(gray: np.ndarray, level: float = 76.0) -> np.ndarray:
    """`gray` with a tool's selection box drawn on its outermost pixels, red (grey 76) by default."""
    out = gray.copy()
    out[[0, -1], :] = level
    out[:, [0, -1]] = level
    return out


def variants(gray: np.ndarray) -> dict[str, np.ndarray]:
    gray = gray.astype(np.float32)
    paper = background_level(gray)
    black_ground = np.clip(paper - gray, 0, 255)
    dark_ground = np.clip(0.8 * (paper - gray) + 20, 0, 255)
    return {
        "as_is": gray,
        "black_frame": framed(gray),
        "black_frame_resized": framed(gray, 0.8),
        "outlined": outlined(gray),
        "turned": turned(gray),
        "turned_slightly": turned(gray, 0.5),
        "turned_quarter": turned(gray, 90.0),
        "dark_ground": dark_ground,
        "dark_ground_framed": framed(dark_ground),
        "dark_ground_framed_resized": framed(dark_ground, 0.8),
        "black_ground": black_ground,
        "black_ground_turned": turned(black_ground),
    }


def bright_share(gray: np.ndarray) -> float:
    filled = paper_filled(gray)
    return brighter_than_paper_share(filled.gray, background_level(filled.gray), filled.fill_pixels)


def refused(gray: np.ndarray, spec: PreprocessSpec) -> str | None:
    """The bright-on-dark refusal of the real preprocessing, else None (other refusals are not this one's)."""
    try:
        preprocess_gray(gray, spec)
    except ImageError as exc:
        return str(exc) if "bright chromosome on a dark ground" in str(exc) else None
    return None


def measure(roots: list[Path], limit: int | None = None) -> dict:
    spec = PreprocessSpec(size=96, width=32, stain_level=0.8)
    shares: dict[str, list[float]] = {name: [] for name in (*G_BANDED, *BRIGHT_ON_DARK)}
    refusals = dict.fromkeys(shares, 0)
    first_refused: dict[str, str] = {}
    crops = 0
    for root in roots:
        samples = read_labeled_folder(root)[:limit]
        for index, sample in enumerate(samples, start=1):
            for name, image in variants(load_gray(sample.path)).items():
                shares[name].append(bright_share(image))
                message = refused(image, spec)
                if message:
                    refusals[name] += 1
                    first_refused.setdefault(name, f"{sample.path}: {message}")
            crops += 1
            if index % 2000 == 0:
                print(f"{root.name}: {index}/{len(samples)}", file=sys.stderr, flush=True)
    return {
        "crops": crops,
        "roots": [str(r) for r in roots],
        "limit": BRIGHT_ON_DARK_SHARE,
        "variants": {
            name: {
                "refused": refusals[name],
                "share_median": float(np.median(values)),
                "share_p99": float(np.percentile(values, 99)),
                "share_max": float(np.max(values)),
                "share_min": float(np.min(values)),
                "first_refused": first_refused.get(name),
            }
            for name, values in shares.items() if values
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", type=Path, help="labeled folders of G-banded crops")
    parser.add_argument("--limit", type=int, default=None, help="crops per folder (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = measure(args.roots, args.limit)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(f"{result['crops']} crops, refused when {result['limit']:.0%} or more of a crop's own pixels lie far above "
          f"its ground ({result['seconds']} s)")
    width = max(len(name) for name in result["variants"])
    print(f"{'copy':{width}s} {'refused':>14s} {'share median':>13s} {'p99':>6s} {'max':>6s} {'min':>6s}")
    for name, row in result["variants"].items():
        kind = "G-banded" if name in G_BANDED else "bright-on-dark"
        print(f"{name:{width}s} {row['refused']:>6d} ({row['refused'] / result['crops']:6.1%}) {row['share_median']:13.3f} "
              f"{row['share_p99']:6.3f} {row['share_max']:6.3f} {row['share_min']:6.3f}  {kind}")
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    wrongly = sum(result["variants"][name]["refused"] for name in G_BANDED if name in result["variants"])
    return 1 if wrongly else 0


if __name__ == "__main__":
    raise SystemExit(main())
