"""Which way up a crop reaches the network: as given, or read both ways and the two reads averaged.

Karyogram software stands every chromosome p arm up, and the crops of both labs here come from
karyograms, so the network learns p-arm-up as a cue (training flips left-right, never upside
down, unless `karyo-export train --vflip`). Turning a tilted crop upright (``focus.align_upright``)
cannot restore that: it does not know the p arm from the q arm and takes the smaller turn. A lab
that cuts its crops out of the metaphase itself hands the network about half of them p arm down,
and a p-arm-up network reads a crop turned half a circle right about one time in six
(benchmarks/ACCURACY.md).

``any`` reads each crop as given and turned half a circle and averages the two reads: the read
the right way up is usually the confident one and outweighs the other. Keeping only the clearer
read (the first rule built) reads as many crops right from the image but hands assembly
overconfident mistakes: over the five folds of benchmarks/ACCURACY.md the average puts 98.93% of
crops right after assembly where the clearer read put 98.35% (crops at any angle: 98.90 against
98.19%; a `--vflip` network 99.30 against 99.24%). Which read was the clearer still says which
way up the crop stood (`turned`), so the karyogram can stand it p arm up. It costs a second
pass of the network, and on crops that are all p arm up it gives back part of what the cue was
worth (99.32 -> 98.93% after assembly), so it is an option for such labs, not the default for a
p-arm-up network. A network trained with `--vflip` never learns the cue: its bundle says so
(manifest `orientation`: "any", written by `karyo-export convert`), and it is read both ways
unless the user says otherwise, since there the second read only adds (benchmarks/ACCURACY.md,
Which way up).
The half turn is applied to the preprocessed tensor, not the image, so a crop is preprocessed
once: preprocessing centres the chromosome in its box, so the turned tensor is the turned crop
but for a pixel's rounding at the edges (on the 4,054 crops of the release's fold 1 the clearer
read put 95.54% of them right this way, 95.36% when each crop was preprocessed turned).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

ORIENTATIONS: tuple[str, ...] = ("p-arm-up", "any")
DEFAULT_ORIENTATION = "p-arm-up"

# A cell read p arm up is checked when its crops are read unsurely (mean top probability under
# UNSURE_BELOW: 17 of the release's 446 held-out cells as cut, every cell turned or half turned),
# and a hint is given when at least TURNED_SHARE of them read more clearly turned half a circle
# (as cut at most 0.33, 0.15 for 99% of cells; half turned at least 0.32, 0.35 for 99%). Fewer
# than HINT_MIN_CROPS crops say too little.
UNSURE_BELOW = 0.8
TURNED_SHARE = 0.3
HINT_MIN_CROPS = 10


def check_orientation(orientation: str) -> str:
    """`orientation` when it is one of ORIENTATIONS; a ValueError naming them otherwise."""
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {', '.join(ORIENTATIONS)}, got {orientation!r}")
    return orientation


def chosen_orientation(requested: str | None, bundle_orientation: str) -> str:
    """The orientation to read with: the one asked for, else the bundle's own (None = not asked)."""
    return check_orientation(requested if requested is not None else bundle_orientation)


def half_turn(tensors: np.ndarray) -> np.ndarray:
    """NHWC tensors turned by 180 degrees (upside down and left-right swapped), as a new array."""
    tensors = np.asarray(tensors)
    if tensors.ndim != 4:
        raise ValueError(f"expected NHWC tensors, got shape {tensors.shape}")
    return np.ascontiguousarray(tensors[:, ::-1, ::-1, :])


def both_ways_read(as_given: np.ndarray, turned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per crop the mean of its two reads, and which crops stood turned: those whose turned read
    has the more probable top class (a tie counts as standing as given)."""
    as_given, turned = np.asarray(as_given), np.asarray(turned)
    if as_given.shape != turned.shape:
        raise ValueError(f"two reads of different shapes: {as_given.shape} and {turned.shape}")
    stood_turned = turned.max(axis=1) > as_given.max(axis=1)
    return (as_given + turned) / 2, stood_turned


def read_oriented(
    predict: Callable[[np.ndarray], np.ndarray], tensors: np.ndarray, orientation: str
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of `tensors` under `orientation` with `predict` (tensors -> probabilities),
    and which crops were read turned (all False for p-arm-up)."""
    check_orientation(orientation)
    as_given = predict(tensors)
    if orientation == "p-arm-up" or len(tensors) == 0:
        return as_given, np.zeros(len(as_given), dtype=bool)
    return both_ways_read(as_given, predict(half_turn(tensors)))


def orientation_hint(as_given: np.ndarray, read_turned: Callable[[], np.ndarray]) -> str | None:
    """For the crops of one cell read p arm up: one line saying they seem not to stand p arm up, or None.

    A p-arm-up network reads a crop standing upside down right about one time in six and gives no
    error, so a lab that cuts its crops out of the metaphase would otherwise learn it from wrong
    karyotypes. The hint changes nothing in the reading (reading both ways costs a lab whose crops
    are p arm up part of what the cue is worth, and on another lab's crops a weak network reads
    many upright cells as possibly turned); it tells the user what to try. `read_turned` (the
    cell's probabilities read turned half a circle) is called only for a cell read unsurely, so a
    sure cell costs nothing.
    """
    as_given = np.asarray(as_given)
    if len(as_given) < HINT_MIN_CROPS or float(as_given.max(axis=1).mean()) >= UNSURE_BELOW:
        return None
    clearer = int(both_ways_read(as_given, read_turned())[1].sum())  # the rule `any` names a crop turned by
    if clearer < TURNED_SHARE * len(as_given):
        return None
    return (f"{clearer} of {len(as_given)} crops read more clearly turned half a circle: if they do not all "
            "stand p arm up, read them with --orientation any (or train with --vflip)")


__all__ = [
    "DEFAULT_ORIENTATION", "HINT_MIN_CROPS", "ORIENTATIONS", "TURNED_SHARE", "UNSURE_BELOW", "both_ways_read",
    "check_orientation", "chosen_orientation", "half_turn", "orientation_hint", "read_oriented",
]
