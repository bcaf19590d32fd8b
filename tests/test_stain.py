"""Evening out staining (`PreprocessSpec.stain_level`): a pale slide and a dark one give the model
the same chromosome, the background becomes 0 whatever the paper's gray, and bundles written
before the step existed are served as they were trained."""

from __future__ import annotations

import numpy as np
import pytest

from karyo.runtime.preprocess import STAIN_GAIN_RANGE, PreprocessSpec, preprocess_array


def rod(body: int = 60, band: int = 150, paper: int = 245, length: int = 60, thick: int = 12) -> np.ndarray:
    """An upright dark rod with a paler band a third of the way down, on paper of gray `paper`."""
    crop = np.full((length + 16, thick + 16), paper, np.uint8)
    crop[8 : 8 + length, 8 : 8 + thick] = body
    crop[8 + length // 3 : 8 + length // 3 + 6, 8 : 8 + thick] = band
    return crop


def paler(crop: np.ndarray, factor: float, paper: int = 245) -> np.ndarray:
    """The same crop from a slide stained `factor` times as dark (darkness = paper minus gray)."""
    return np.round(paper - (paper - crop.astype(np.float32)) * factor).astype(np.uint8)


SPEC = PreprocessSpec(size=48, width=16, stain_level=0.8)


def test_a_pale_slide_and_a_dark_one_give_the_same_input():
    dark, pale = rod(), paler(rod(), 0.6)
    evened = np.abs(preprocess_array(dark, SPEC) - preprocess_array(pale, SPEC)).max()
    plain_spec = PreprocessSpec(size=48, width=16)
    as_is = np.abs(preprocess_array(dark, plain_spec) - preprocess_array(pale, plain_spec)).max()
    assert evened < 0.02  # uint8 rounding of the pale copy only
    assert as_is > 0.25  # body 0.76 against 0.45 without the step


def test_the_chromosome_reaches_the_level_and_the_paper_becomes_zero():
    for paper in (245, 200):  # white paper and a gray one
        tensor = preprocess_array(rod(body=90, band=160, paper=paper), SPEC)[..., 0]
        assert tensor[0, 0] == pytest.approx(0.0, abs=1e-6) and tensor[-1, -1] == pytest.approx(0.0, abs=1e-6)
        assert np.percentile(tensor[tensor > 0.05], 95) == pytest.approx(0.8, abs=0.02)
        band_rows = tensor[tensor.shape[0] // 2 - 12 : tensor.shape[0] // 2, tensor.shape[1] // 2]
        expected_band = (paper - 160) / (paper - 90) * 0.8  # darkness ratio of band to body survives
        assert band_rows.min() == pytest.approx(expected_band, abs=0.03)
    grey_as_is = preprocess_array(rod(paper=200), PreprocessSpec(size=48, width=16))[0, 0, 0]
    assert grey_as_is == pytest.approx(1 - 200 / 255, abs=1e-4)  # without the step gray paper is not 0


def test_gain_is_bounded_so_a_faint_smudge_is_not_blown_up():
    faint = rod(body=225, band=235)  # darkness 0.08: gain 9.8 wanted
    tensor = preprocess_array(faint, SPEC)[..., 0]
    body = (245 - 225) / 245
    assert tensor.max() == pytest.approx(body * STAIN_GAIN_RANGE[1], abs=0.01)


def test_without_inversion_the_chromosome_is_dark_on_white():
    spec = PreprocessSpec(size=48, width=16, invert=False, stain_level=0.8)
    tensor = preprocess_array(rod(paper=200), spec)[..., 0]
    assert tensor[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert tensor.min() == pytest.approx(0.2, abs=0.02)


def test_an_object_lighter_than_the_paper_passes_through_unscaled():
    """No darkness to even out (its 95th percentile is below 0): gain 1, not a gain that flips its sign."""
    crop = np.full((40, 20), 240, np.uint8)
    crop[8:32, 8:12] = 250
    tensor = preprocess_array(crop, SPEC)
    assert tensor.min() == pytest.approx((240.0 - 250.0) / 240.0, abs=1e-3)
    assert tensor.max() == pytest.approx(0.0, abs=1e-6)  # the paper


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.3, True, float("nan"), "0.8"])
def test_a_stain_level_outside_its_range_is_refused(bad):
    with pytest.raises(ValueError, match="stain_level"):
        PreprocessSpec(size=16, stain_level=bad)
