"""benchmarks/joined_pairs.py's joining: two crops become one object, laid as the mode says."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from joined_pairs import join  # noqa: E402

from karyo.runtime.preprocess import measure_chromosome  # noqa: E402


def rod(length: int, width: int = 10) -> np.ndarray:
    """A dark upright bar on white paper with a 6 px margin."""
    crop = np.full((length + 12, width + 12), 240, np.uint8)
    crop[6 : 6 + length, 6 : 6 + width] = 60
    return crop


@pytest.mark.parametrize("mode", ["side", "end", "cross"])
def test_two_crops_are_joined_into_one_object(mode):
    long, short = rod(80), rod(40)
    joined = join(long, short, mode, np.random.default_rng(0))
    length, area = measure_chromosome(joined, align=True)
    one, two = measure_chromosome(long, align=True), measure_chromosome(short, align=True)
    if mode == "side":  # touching along their length: both areas, the longer one's length
        assert area == pytest.approx(one[1] + two[1], rel=0.1) and length == pytest.approx(one[0], abs=3)
    elif mode == "end":  # one after the other: both lengths, both areas
        assert area == pytest.approx(one[1] + two[1], rel=0.1) and length == pytest.approx(one[0] + two[0], abs=4)
    else:  # laid across: the overlap is counted once
        assert one[1] < area < one[1] + two[1]
    assert joined.min() == 60 and joined[0, 0] == 240  # chromosome and paper keep their grey levels
