"""Two chromosomes cut as one object: what the cell's call becomes, and whether karyo points at it.

Chromosomes that touch or overlap in the metaphase are cut as one object by segmentation that
cannot part them, and a lab's crops will hold some. Counted once, such a crop leaves its cell one
chromosome short, and a normal cell is called as a monosomy. We have no such crops, so we make
them from held-out cells: in each cell of at least `--min-crops` crops, two crops drawn at random
are joined into one image ("side": side by side, touching; "end": end to end, touching; "cross":
the second turned 40 to 90 degrees and laid across the first) and the cell is called without the
two and with the joined crop, as `karyo karyotype` calls it (size in the cell weighed in). Each
cell is also called as it is (`flagged_as_they_are`): real cells called one short whose crops get
the "measures like a ... and a ... together" finding, false alarms unless a person finds a pile-up.

    python benchmarks/joined_pairs.py BUNDLE MODEL/heldout --out runs/joined

Writes `joined.json` and `examples.png` (joined real crops: do not commit).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from karyo.runtime.bundle import atomic_write_text, load_bundle
from karyo.runtime.cell_size import sizes_array
from karyo.runtime.classifier import Classifier
from karyo.runtime.dataset import read_labeled_folder
from karyo.runtime.focus import rotate_whole
from karyo.runtime.karyotype import KaryotypeCall, call_karyotype, karyotype_cell
from karyo.runtime.paper import background_level
from karyo.runtime.preprocess import load_gray

MODES = ("side", "end", "cross")
DARK = 20.0  # grey levels below the paper that count as a chromosome's own pixels


def _placed(gray: np.ndarray, paper: float, shape: tuple[int, int], centre: tuple[int, int]) -> np.ndarray:
    """`gray` on a canvas of `shape` filled with `paper`, its object's centroid at `centre` (row, col)."""
    rows, cols = np.nonzero(gray < background_level(gray) - DARK)
    top, left = centre[0] - int(rows.mean()), centre[1] - int(cols.mean())
    canvas = np.full(shape, paper, np.float32)
    canvas[top : top + gray.shape[0], left : left + gray.shape[1]] = gray
    return canvas


def join(first: np.ndarray, second: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    """One image holding both crops' chromosomes as one object, laid as `mode` says."""
    paper = max(background_level(first), background_level(second))
    if mode == "cross":
        second = rotate_whole(second, float(rng.uniform(40, 90) * rng.choice([-1, 1])), background_level(second))
    reach = max(first.shape) + max(second.shape)  # no offset beyond this can make the two meet
    shape = (3 * reach, 3 * reach)
    base = _placed(first, paper, shape, (reach, reach))
    step = {"side": (0, 1), "end": (1, 0), "cross": (0, 0)}[mode]
    # slide the second chromosome in from beyond reach until its pixels meet the first's
    for offset in range(reach, -1, -1):
        moved = _placed(second, paper, shape, (reach + step[0] * offset, reach + step[1] * offset))
        if mode == "cross" or ((base < paper - DARK) & (moved < paper - DARK)).any():
            break
    joined = np.minimum(base, moved)
    rows, cols = np.nonzero(joined < paper - DARK)
    return joined[max(0, rows.min() - 4) : rows.max() + 5, max(0, cols.min() - 4) : cols.max() + 5].astype(np.uint8)


def _flagged_row(call: KaryotypeCall) -> int | None:
    """The crop flagged as maybe holding the missing chromosome too, else None."""
    return next((a.index for a in call.assignments if a.joined), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("data", type=Path, help="labeled folder of held-out crops with cells (e.g. MODEL/heldout)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2, help="joined pairs per cell and way of lying")
    parser.add_argument("--min-crops", type=int, default=40, help="cells with fewer crops are left out")
    args = parser.parse_args(argv)

    bundle = load_bundle(args.bundle)
    classifier = Classifier(bundle, precision=args.precision, provider="cpu")
    cells: dict[str, list] = defaultdict(list)
    for sample in read_labeled_folder(args.data):
        cells[sample.cell_key].append(sample)
    rng = np.random.default_rng(args.seed)

    def call_of(images: list[np.ndarray]) -> KaryotypeCall:
        predictions = classifier.predict_images(images)
        probs = np.stack([p.probs for p in predictions])
        sizes = sizes_array([p.size for p in predictions])
        return karyotype_cell(probs, bundle.labels, sizes=sizes, size_prior=bundle.size_prior)

    tally = {name: defaultdict(int) for name in ("as_is", *MODES)}
    flagged_as_they_are, examples = [], []
    for key, samples in sorted(cells.items()):
        if len(samples) < args.min_crops:
            continue
        grays = [load_gray(s.path).astype(np.uint8) for s in samples]
        truth = call_karyotype([s.label for s in samples]).karyotype
        call = call_of(grays)
        row = tally["as_is"]
        row["cells"] += 1
        row["called_45"] += call.complete and call.count == 45
        if _flagged_row(call) is not None:
            row["flagged"] += 1
            flagged_as_they_are.append({"cell": key, "truth": truth, "called": call.karyotype,
                                 "crop": str(samples[_flagged_row(call)].path), "findings": call.findings})
        for _ in range(args.rounds):
            for mode in MODES:
                i, j = (int(k) for k in rng.choice(len(grays), 2, replace=False))
                joined = join(grays[i], grays[j], mode, rng)
                if len(examples) < 12:
                    examples.append(joined)
                rest = [g for k, g in enumerate(grays) if k not in (i, j)]
                called = call_of(rest + [joined])
                row = tally[mode]
                row["cells"] += 1
                row["call_right"] += called.karyotype == truth
                row["called_one_short"] += called.complete and called.count == len(samples) - 1
                flagged = _flagged_row(called)
                row["flagged_at_joined_crop"] += flagged == len(rest)
                row["flagged_elsewhere"] += flagged is not None and flagged != len(rest)
        print(f"{key}: {truth}, called {call.karyotype}; so far {dict(tally['side'])} (side)", file=sys.stderr)
    record = {"bundle": str(args.bundle), "precision": args.precision, "seed": args.seed, "rounds": args.rounds,
              "tally": {name: dict(row) for name, row in tally.items()}, "flagged_as_they_are": flagged_as_they_are}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "joined.json", json.dumps(record, indent=2) + "\n")
    height = max(image.shape[0] for image in examples)
    sheet = np.concatenate([cv2.copyMakeBorder(image, 0, height - image.shape[0], 4, 4, cv2.BORDER_CONSTANT, value=255)
                            for image in examples], axis=1)
    cv2.imwrite(str(args.out / "examples.png"), sheet)
    print(json.dumps(record["tally"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
