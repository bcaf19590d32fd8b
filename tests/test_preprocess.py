"""The one preprocessing path: decoding (8/16-bit, gray/RGB/RGBA, four formats), geometry, and refusal of bad input."""

from __future__ import annotations

import dataclasses
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from karyo.runtime.preprocess import (
    ImageError,
    PreprocessSpec,
    decode_gray,
    prepare_gray,
    preprocess_array,
    preprocess_bytes,
    preprocess_path,
    to_gray,
)


def _encode(image: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def _crop(height: int = 30, width: int = 14, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    crop = np.full((height, width), 250, np.uint8)
    crop[3:-3, 3:-3] = rng.integers(20, 200, size=(height - 6, width - 6))
    return crop


@pytest.mark.parametrize("ext", [".png", ".tiff", ".bmp"])
def test_lossless_8bit_gray_round_trip(ext):
    crop = _crop()
    np.testing.assert_array_equal(decode_gray(_encode(crop, ext)), crop.astype(np.float32))


def test_jpeg_gray_round_trip_is_close():
    crop = _crop()
    decoded = decode_gray(_encode(crop, ".jpg"))
    assert decoded.shape == crop.shape
    assert float(np.mean(np.abs(decoded - crop))) < 8.0  # JPEG is lossy; a wrong decode would be ~100 off


@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_16bit_scaled_to_8bit_range(ext):
    crop16 = (_crop().astype(np.uint16) * 257) + np.uint16(3)  # full 16-bit range, not a multiple of 257
    decoded = decode_gray(_encode(crop16, ext))
    np.testing.assert_allclose(decoded, crop16.astype(np.float32) * (255.0 / 65535.0), rtol=0, atol=1e-3)


@pytest.mark.parametrize("bits", [10, 12, 14])
def test_a_camera_s_fewer_bits_in_a_16bit_file_are_read_at_their_own_depth(bits):
    """White paper at 1023 (10-bit) must read as white, not as the near-black 4 of 255 that dividing
    by 65535 gives: the chromosome would then differ from the paper by under a grey level or two."""
    crop = _crop()
    top = (1 << bits) - 1
    crop16 = np.round(crop.astype(np.float64) * top / 255.0).astype(np.uint16)
    decoded = decode_gray(_encode(crop16, ".tiff"))
    np.testing.assert_allclose(decoded, crop16 * (255.0 / top), rtol=0, atol=1e-3)
    assert decoded.max() == pytest.approx(250.0, abs=0.2)  # the paper, as in the 8-bit file
    spec = PreprocessSpec(size=32, width=16, stain_level=0.8)
    np.testing.assert_allclose(preprocess_bytes(_encode(crop16, ".tiff"), spec), preprocess_array(crop, spec), atol=0.02)


@pytest.mark.parametrize("dtype", [np.int32, np.float32])
def test_12bit_samples_in_wider_arrays_are_read_at_their_own_depth(dtype):
    crop = _crop()
    crop12 = (crop.astype(np.float64) * 4095.0 / 255.0).astype(dtype)
    np.testing.assert_allclose(to_gray(crop12), crop12.astype(np.float64) * (255.0 / 4095.0), atol=1e-3)


def test_full_range_signed_16bit_keeps_its_own_ceiling():
    np.testing.assert_allclose(to_gray(np.array([[0, 16384, 32767]], np.int16)), [[0.0, 127.5, 255.0]], atol=0.01)


def test_8bit_values_in_a_16bit_file_are_not_stretched():
    crop16 = _crop().astype(np.uint16)  # every value under 256
    np.testing.assert_array_equal(decode_gray(_encode(crop16, ".png")), _crop().astype(np.float32))


def test_rgb_uses_luma_weights():
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, size=(10, 7, 3), dtype=np.uint8)
    decoded = decode_gray(_encode(bgr, ".png"))
    expected = bgr[..., 0] * 0.114 + bgr[..., 1] * 0.587 + bgr[..., 2] * 0.299
    np.testing.assert_allclose(decoded, expected, atol=1e-3)


def test_rgba_transparent_pixels_are_white_background():
    bgra = np.zeros((6, 6, 4), np.uint8)
    bgra[..., :3] = 40
    bgra[:3, :, 3] = 255  # top half opaque dark, bottom half fully transparent
    decoded = decode_gray(_encode(bgra, ".png"))
    np.testing.assert_allclose(decoded[:3], 40.0, atol=1e-3)
    np.testing.assert_allclose(decoded[3:], 255.0, atol=1e-3)


def test_pad_and_area_resize_match_numpy():
    """8x4 crop, size 4: pad to 8x8 with the border median, 2x2 block means, invert, normalize.
    (The paper ring is kept whole, as bundles from before `margin_invariant` cut it.)"""
    crop = np.array(
        [[200, 200, 200, 200], [200, 10, 60, 200], [200, 90, 30, 200], [200, 120, 70, 200],
         [200, 40, 80, 200], [200, 20, 100, 200], [200, 50, 110, 200], [200, 200, 200, 200]],
        np.uint8,
    )
    spec = PreprocessSpec(size=4, invert=True, mean=0.25, std=0.5, margin_invariant=False)
    background = np.median(np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]]))
    square = np.full((8, 8), background, np.float64)
    square[:, 2:6] = crop  # (8 - 4) // 2 = 2 columns of padding on each side
    blocks = square.reshape(4, 2, 4, 2).mean(axis=(1, 3))
    expected = ((1.0 - blocks / 255.0) - 0.25) / 0.5
    tensor = preprocess_array(crop, spec)
    assert tensor.shape == (4, 4, 1) and tensor.dtype == np.float32
    np.testing.assert_allclose(tensor[..., 0], expected, atol=1e-5)


@pytest.mark.parametrize("paper", [255, 200, 0])
def test_a_blank_crop_is_refused_not_read_as_some_chromosome(paper):
    """An empty cut read anyway gets a label (21 at 0.4 from a fold-1 bundle) and, in a cell, a chromosome's slot."""
    with pytest.raises(ImageError, match="no chromosome in the image"):
        preprocess_array(np.full((40, 20), paper, np.uint8), PreprocessSpec(size=32))


def test_a_faint_chromosome_at_the_blank_threshold_is_read_and_one_level_fainter_is_not():
    crop = np.full((40, 20), 250, np.uint8)
    crop[8:32, 8:12] = 242  # 8 grey levels below the paper
    tensor = preprocess_array(crop, PreprocessSpec(size=32))
    assert tensor.max() == pytest.approx(1.0 - 242.0 / 255.0, abs=1e-4)
    assert tensor.min() == pytest.approx(1.0 - 250.0 / 255.0, abs=1e-4)  # the paper, inverted: near 0
    crop[8:32, 8:12] = 243
    with pytest.raises(ImageError, match="by 8 grey levels"):
        preprocess_array(crop, PreprocessSpec(size=32))


def test_focus_main_object_blanks_a_neighbour_entering_through_the_edge():
    crop = np.full((40, 40), 255, np.uint8)
    crop[5:35, 5:15] = 40  # the chromosome
    crop[28:40, 30:40] = 60  # a neighbour reaching into the bounding box from the corner
    plain = preprocess_array(crop, PreprocessSpec(size=40, focus_main_object=False, tight_crop=False))
    focused = preprocess_array(crop, PreprocessSpec(size=40, focus_main_object=True, tight_crop=False))
    assert plain[34, 35, 0] > 0.5 and focused[34, 35, 0] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(focused[10:30, 7:13], plain[10:30, 7:13])


def test_focus_main_object_keeps_every_part_of_a_clean_crop():
    """A satellite or a chromatid piece inside the margin is part of the chromosome, not a neighbour;
    a pale band must not split the chromosome either."""
    crop = np.full((44, 20), 250, np.uint8)
    crop[4:38, 5:15] = 60
    crop[20:23, 5:15] = 215  # a pale band across the chromosome
    crop[40:42, 8:11] = 90  # a small separate piece, not touching the edge
    spec_on = PreprocessSpec(size=44, width=20, tight_crop=False)
    spec_off = PreprocessSpec(size=44, width=20, focus_main_object=False, tight_crop=False)
    np.testing.assert_array_equal(preprocess_array(crop, spec_on), preprocess_array(crop, spec_off))


def test_tall_box_keeps_the_crop_aspect_and_pads_only_the_short_side():
    """A 12x4 crop in a 6x2 box (same aspect) is only resized; a 4x4 crop in the 6x2 box is padded
    to 12x4 (rows above and below), never stretched."""
    spec = PreprocessSpec(size=6, width=2, invert=False, align_axis=False)  # padding geometry only
    tall = np.full((12, 4), 100, np.uint8)
    # not 0: black along the border is a padding tool's fill (fill_with_paper); one column, not two,
    # so that the paper (the border's median) is the 100, not a level between (a bright-on-dark crop)
    tall[:, :1] = 10
    tensor = preprocess_array(tall, spec)
    assert tensor.shape == (6, 2, 1)
    np.testing.assert_allclose(tensor[..., 0], np.tile([[55 / 255, 100 / 255]], (6, 1)), atol=1e-6)
    square = np.full((4, 4), 30, np.uint8)
    square[0, :] = 200  # border median 30 -> padding is 30 as well; the 200 row shows where the crop sits
    tensor = preprocess_array(square, spec)[..., 0] * 255
    # 4x4 padded to 12x4 (4 rows above, 4 below), then 2x2 means: the 200-row lands in output row 2
    np.testing.assert_allclose(tensor[:, 0], [30, 30, 115, 30, 30, 30], atol=1e-3)


def test_version_1_manifest_spec_reads_as_a_square_box():
    old = {"version": 1, "pipeline": "gray-pad-square-area-resize", "size": 64, "invert": True, "mean": 0.0,
           "std": 1.0, "focus_main_object": False, "max_pixels": 1000}
    spec = PreprocessSpec.from_dict(old)
    assert spec.input_shape == (64, 64, 1) and spec.focus_main_object is False
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    tall = PreprocessSpec(size=96, width=32)
    assert tall.input_shape == (96, 32, 1) and PreprocessSpec.from_dict(tall.to_dict()) == tall


def test_path_round_trip_and_error_names_the_file(tmp_path):
    crop = _crop()
    good = tmp_path / "crop.tiff"
    cv2.imwrite(str(good), crop)
    spec = PreprocessSpec(size=16)
    np.testing.assert_allclose(preprocess_path(good, spec), preprocess_array(crop, spec))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: empty file"):
        preprocess_path(empty, spec)
    with pytest.raises(ImageError, match=r"missing\.png"):
        preprocess_path(tmp_path / "missing.png", spec)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"this is a text file, not a picture\n",
        _encode(_crop(), ".tiff")[:60],  # truncated TIFF
        _encode(_crop(), ".png")[:40],  # truncated PNG
        _png_header_only(200_000, 200_000),  # decompression bomb: header claims 4e10 pixels
    ],
    ids=["empty", "text", "truncated-tiff", "truncated-png", "bomb-header"],
)
def test_bad_bytes_raise_image_error(data):
    with pytest.raises(ImageError):
        preprocess_bytes(data, PreprocessSpec(size=16))


def test_pixel_limit_from_spec():
    image = np.full((300, 300), 255, np.uint8)
    image[100:200, 140:160] = 60
    big = _encode(image, ".png")
    with pytest.raises(ImageError, match="pixel limit"):
        preprocess_bytes(big, PreprocessSpec(size=16, max_pixels=10_000))
    assert preprocess_bytes(big, PreprocessSpec(size=16, max_pixels=100_000)).shape == (16, 16, 1)


def test_thin_strip_is_refused_before_padding_allocates_a_huge_square():
    strip = np.full((1, 200_000), 255, np.uint8)  # 200k pixels, but padded it would be 4e10
    with pytest.raises(ImageError, match="padded to the model.s aspect ratio"):
        preprocess_array(strip, PreprocessSpec(size=16))


@pytest.mark.parametrize(
    "array",
    [np.zeros((0, 5), np.uint8), np.zeros((5, 0, 3), np.uint8), np.zeros(7, np.uint8), np.zeros((4, 4, 2), np.uint8),
     np.full((4, 4), np.nan, np.float32), np.zeros((2, 2, 2, 2), np.uint8), np.zeros((3, 3), np.complex64)],
    ids=["zero-rows", "zero-cols", "1d", "two-channels", "nan", "4d", "complex"],
)
def test_bad_arrays_raise_image_error(array):
    with pytest.raises(ImageError):
        preprocess_array(array, PreprocessSpec(size=8))


def test_float_images_in_unit_range_are_scaled():
    np.testing.assert_allclose(to_gray(np.full((2, 2), 0.5, np.float32)), 127.5)
    np.testing.assert_allclose(to_gray(np.full((2, 2), 100.0, np.float64)), 100.0)


@pytest.mark.parametrize("bad", [{"size": 0}, {"size": "64"}, {"std": 0.0}, {"mean": float("inf")}, {"max_pixels": -1}])
def test_spec_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        PreprocessSpec(**bad)


def test_spec_round_trips_and_stores_plain_types():
    spec = PreprocessSpec(size=np.int64(48), mean=np.float32(0.5), std=2.0, focus_main_object=True)
    again = PreprocessSpec.from_dict(spec.to_dict())
    assert again == spec and type(again.size) is int and type(again.mean) is float


@given(st.binary(max_size=600))
def test_random_bytes_give_a_tensor_or_a_clean_error(data):
    try:
        tensor = preprocess_bytes(data, PreprocessSpec(size=8))
    except ImageError:
        return
    assert tensor.shape == (8, 8, 1) and np.all(np.isfinite(tensor))


@given(st.sampled_from([".png", ".tiff", ".bmp"]), st.integers(0, 10_000), st.integers(1, 255))
def test_corrupted_real_files_give_a_tensor_or_a_clean_error(ext, position, flip):
    data = bytearray(_encode(_crop(12, 6), ext))
    data[position % len(data)] ^= flip
    try:
        tensor = preprocess_bytes(bytes(data), PreprocessSpec(size=8))
    except ImageError:
        return
    assert tensor.shape == (8, 8, 1) and np.all(np.isfinite(tensor))


_dtypes = st.sampled_from([np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64, np.bool_, np.float16])


@given(hnp.arrays(_dtypes, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=12)))
@example(np.array([[8, 8, 8, 8], [8, 0, 8, 8]], np.uint8))  # a lone pixel: once "turned" by 90 degrees to nothing
def test_random_arrays_give_a_tensor_or_a_clean_error(array):
    try:
        tensor = preprocess_array(array, PreprocessSpec(size=8))
    except ImageError:
        return
    assert tensor.shape == (8, 8, 1) and tensor.dtype == np.float32 and np.all(np.isfinite(tensor))


def test_an_object_without_a_direction_is_not_turned():
    """A lone pixel has no spread, so no axis: it was turned 90 degrees and, cut at its own box
    (`margin_invariant`), left an empty crop that crashed the resize instead of being read."""
    from karyo.runtime.focus import major_axis_tilt
    from karyo.runtime.preprocess import focused_crop

    speck = np.full((2, 4), 8.0, np.float32)
    speck[1, 1] = 0.0
    lone = np.zeros((2, 4), np.uint8)
    lone[1, 1] = 1
    assert major_axis_tilt(lone) is None
    assert focused_crop(speck, PreprocessSpec(size=8)).shape == (1, 1)
    bar = np.zeros((9, 9), np.uint8)
    bar[4, 1:8] = 1  # a lying bar still has its direction: a quarter turn stands it up
    assert abs(major_axis_tilt(bar)) == pytest.approx(90.0)


def test_tight_crop_makes_a_wide_margin_look_like_a_thin_one():
    """A lab that cuts with wide margins (or a bounding box stretched by a neighbour) must not make
    every chromosome look shorter: after the tight cut, both crops give the same tensor."""
    chromosome = np.full((40, 12), 250, np.uint8)
    chromosome[2:38, 2:10] = np.linspace(40, 160, 36, dtype=np.uint8)[:, None]
    wide = np.full((80, 60), 250, np.uint8)
    wide[20:60, 24:36] = chromosome
    wide[70:80, 0:8] = 90  # a neighbour entering through the corner
    spec = PreprocessSpec(size=48, width=16)
    np.testing.assert_allclose(preprocess_array(wide, spec), preprocess_array(chromosome, spec), atol=1e-6)
    loose = PreprocessSpec(size=48, width=16, tight_crop=False)
    assert np.abs(preprocess_array(wide, loose) - preprocess_array(chromosome, loose)).max() > 0.3


def test_specs_from_before_the_tight_crop_keep_their_behaviour():
    """A bundle's manifest without `tight_crop` was trained without it: it must be served the same way."""
    data = PreprocessSpec(size=64, width=32).to_dict()
    del data["tight_crop"]
    assert PreprocessSpec.from_dict(data).tight_crop is False


def banded_rod(angle: float, length: int = 90, thick: int = 14, canvas: int = 140) -> np.ndarray:
    """A dark rod with a bright band one third down its length, turned `angle` degrees on paper."""
    upright = np.full((canvas, canvas), 245, np.uint8)
    top, left = (canvas - length) // 2, (canvas - thick) // 2
    upright[top : top + length, left : left + thick] = 60
    upright[top + length // 3 : top + length // 3 + 8, left : left + thick] = 150
    turn = cv2.getRotationMatrix2D(((canvas - 1) / 2, (canvas - 1) / 2), angle, 1.0)
    return cv2.warpAffine(upright, turn, (canvas, canvas), flags=cv2.INTER_LINEAR, borderValue=245)


def _rows_and_cols_covered(tensor: np.ndarray) -> tuple[int, int]:
    ink = tensor[..., 0] > 0.3  # inverted: the rod is bright, the paper near 0
    return int(ink.any(axis=1).sum()), int(ink.any(axis=0).sum())


@pytest.mark.parametrize("angle", [-75, -40, 25, 60, 90])
def test_align_axis_stands_a_tilted_chromosome_upright_in_the_box(angle):
    """A rod at any angle fills the tall box as the upright rod does; without alignment a rod
    across the crop shrinks to a sliver (its box is fitted whole into the tall, narrow input)."""
    spec = PreprocessSpec(size=48, width=16)
    upright = preprocess_array(banded_rod(0), spec)
    turned = preprocess_array(banded_rod(angle), spec)
    rows, cols = _rows_and_cols_covered(turned)
    assert rows >= 44 and cols <= 12
    assert _rows_and_cols_covered(upright)[0] >= 44
    # upright again, with the band one third from one end (which end is up is not knowable)
    def band_row(tensor: np.ndarray) -> int:
        return int(np.argmin(tensor[6:-6, 8, 0])) + 6

    band, expected = band_row(turned), band_row(upright)
    assert min(abs(band - expected), abs(band - (47 - expected))) <= 2
    unaligned = preprocess_array(banded_rod(angle), PreprocessSpec(size=48, width=16, align_axis=False))
    assert _rows_and_cols_covered(unaligned)[0] < 0.85 * rows


def test_align_axis_leaves_a_nearly_upright_crop_untouched():
    """Tilts inside the training augmentation's range are not turned: no interpolation blur on clean crops."""
    crop = banded_rod(6)
    on = preprocess_array(crop, PreprocessSpec(size=48, width=16))
    off = preprocess_array(crop, PreprocessSpec(size=48, width=16, align_axis=False))
    np.testing.assert_array_equal(on, off)


def test_align_axis_measures_a_tilted_chromosome_by_its_length():
    """The size prior compares lengths within a cell: a rod lying at 45 degrees must measure as long
    as the same rod upright, not as the side of its bounding box."""
    from karyo.runtime.preprocess import measure_chromosome

    upright_length = measure_chromosome(banded_rod(0).astype(np.float32), align=True)[0]
    assert measure_chromosome(banded_rod(45).astype(np.float32), align=True)[0] == pytest.approx(upright_length, abs=3)
    assert measure_chromosome(banded_rod(45).astype(np.float32), align=False)[0] < 0.85 * upright_length


def test_specs_from_before_alignment_keep_their_behaviour_and_newer_ones_are_refused():
    data = PreprocessSpec(size=64, width=32, stain_level=0.7).to_dict()
    assert data["version"] == 7 and PreprocessSpec.from_dict(data).align_axis is True
    assert PreprocessSpec.from_dict(data).stain_level == 0.7
    assert PreprocessSpec.from_dict(data).centred_crop is True
    assert PreprocessSpec.from_dict(data).margin_invariant is True
    assert PreprocessSpec.from_dict(data).neighbour_convexity == 0.02
    del data["align_axis"], data["stain_level"], data["centred_crop"], data["margin_invariant"]
    del data["neighbour_convexity"]
    assert PreprocessSpec.from_dict(data).align_axis is False
    assert PreprocessSpec.from_dict(data).stain_level is None
    assert PreprocessSpec.from_dict(data).centred_crop is False
    assert PreprocessSpec.from_dict(data).margin_invariant is False
    assert PreprocessSpec.from_dict(data).neighbour_convexity is None
    with pytest.raises(ValueError, match="newer than this karyo"):
        PreprocessSpec.from_dict({**data, "version": 8})


def _centred_rod(height: int = 60, width: int = 60) -> np.ndarray:
    """A banded 40 x 12 rod in the middle of the crop: margins of 10 rows and 24 columns each side."""
    crop = np.full((height, width), 245, np.uint8)
    top, left = (height - 40) // 2, (width - 12) // 2
    crop[top : top + 40, left : left + 12] = np.linspace(50, 150, 40, dtype=np.uint8)[:, None]
    return crop


def test_centred_crop_cuts_off_a_neighbour_merged_into_the_chromosome():
    """A neighbour touching the chromosome and entering through the left edge merges with it into
    one object: without the step the crop keeps all of it (and turns the pair as one tilted object),
    with it only the part within the slack of the mirrored margin stays (24 - 2 - 3 = 19 of its 25
    columns go), so the crop is the rod's width plus that remnant and the rod's area is measured
    about as it is alone. The crops are cut at the objects' own box."""
    from karyo.runtime.preprocess import focused_crop, prepare_gray

    clean = _centred_rod().astype(np.float32)
    crowded = clean.copy()
    crowded[28:40, 0:25] = 90  # the neighbour: touches the rod (columns 24-35) and the crop's left edge
    spec = PreprocessSpec(size=48, width=16)
    off = dataclasses.replace(spec, centred_crop=False)
    alone, alone_size = prepare_gray(clean, spec)
    cut, cut_size = prepare_gray(crowded, spec)
    merged, merged_size = prepare_gray(crowded, off)
    assert focused_crop(clean, spec).shape == (40, 12)  # the rod
    assert focused_crop(crowded, spec).shape == (40, 17)  # + the 5 columns of remnant
    assert focused_crop(crowded, off).shape[1] >= 36  # the pair, turned as one tilted object
    assert cut_size[1] < 1.15 * alone_size[1] and merged_size[1] > 1.5 * alone_size[1]
    assert np.abs(cut - alone).mean() < 0.65 * np.abs(merged - alone).mean()
    assert _rows_and_cols_covered(cut)[0] > 1.5 * _rows_and_cols_covered(merged)[0]
    np.testing.assert_array_equal(prepare_gray(clean, off)[0], alone)  # nothing to cut in the clean crop


def test_centred_crop_leaves_crops_without_that_asymmetry_alone():
    """Nothing changes when the object spans an axis (crops cut tight to the chromosome), clears
    both edges, or sits off centre by no more than the slack (2 px + 5% of the side: 2.75 px of 15)."""
    from karyo.runtime.focus import beyond_mirrored_margin

    spec, off = PreprocessSpec(size=48, width=16), PreprocessSpec(size=48, width=16, centred_crop=False)
    tight_in_height = _centred_rod()[10:50]  # touches top and bottom, margins left and right
    against_one_side = np.full((60, 15), 245, np.uint8)  # the rod touches the left edge, 3 px margin on the right
    against_one_side[10:50, 0:12] = _centred_rod()[10:50, 24:36]
    for crop in (_centred_rod(), tight_in_height, against_one_side):
        np.testing.assert_array_equal(preprocess_array(crop, spec), preprocess_array(crop, off))
    # 5 px: past the slack the step cuts 2 columns of the rod, which blanking leaves standing (they
    # lie beside the rest), so they are no neighbour and the cut keeps them, with or without paper
    # (0.08 of the input range off when the cut kept only the rest)
    further_off = np.full((60, 17), 245, np.uint8)
    further_off[10:50, 0:12] = _centred_rod()[10:50, 24:36]
    for chosen in (spec, dataclasses.replace(spec, margin_invariant=False)):
        plain = dataclasses.replace(chosen, centred_crop=False)
        np.testing.assert_array_equal(preprocess_array(further_off, chosen), preprocess_array(further_off, plain))
    mask = np.zeros((40, 20), bool)
    mask[5:35, 0:12] = True  # reaches the left edge, 8 px margin on the right: 8 - 2 - 1 = 5 columns go
    expected = np.zeros_like(mask)
    expected[5:35, 0:5] = True
    np.testing.assert_array_equal(beyond_mirrored_margin(mask), expected)
    mask[:, :] = False
    mask[5:35, 4:16] = True  # clears both edges
    assert beyond_mirrored_margin(mask) is None


def test_a_chromosome_against_one_edge_of_a_crop_cut_with_uneven_margins_keeps_its_side():
    """A crop cut by hand: the rod lies against the left edge with 14 px of paper on the right, the
    asymmetry of a merged neighbour. Taken for one (spec version 6), the 14 - 2 - 1.3 = 10 columns
    of the rod past the mirrored margin were cut off as a neighbour's, and the model read a sliver;
    cutting them off leaves the rod no more convex (a rectangle either way), so with
    `neighbour_convexity` they stay and the crop reads as without the step, while the neighbour
    merged in across the rod (an L-shaped object, far from convex) is still cut off. A hand-edited
    threshold outside 0..1 is refused when the manifest is read."""
    from karyo.runtime.focus import solidity
    from karyo.runtime.preprocess import focused_crop

    spec = PreprocessSpec(size=48, width=16)
    before = dataclasses.replace(spec, neighbour_convexity=None)
    plain = dataclasses.replace(spec, centred_crop=False)
    against_one_side = np.full((60, 26), 245, np.uint8)
    against_one_side[10:50, 0:12] = _centred_rod()[10:50, 24:36]
    np.testing.assert_array_equal(preprocess_array(against_one_side, spec), preprocess_array(against_one_side, plain))
    assert focused_crop(against_one_side.astype(np.float32), spec).shape == (40, 12)
    assert focused_crop(against_one_side.astype(np.float32), before).shape[1] <= 3  # what version 6 kept
    crowded = _centred_rod().astype(np.float32)
    crowded[28:40, 0:25] = 90  # as in test_centred_crop_cuts_off_a_neighbour_merged_into_the_chromosome
    assert focused_crop(crowded, spec).shape == focused_crop(crowded, before).shape == (40, 17)
    rod = np.zeros((40, 20), bool)
    rod[5:35, 4:16] = True
    l_shape = rod.copy()
    l_shape[20:30, 0:4] = True
    assert solidity(rod) == 1.0 and 0.75 < solidity(l_shape) < 0.95
    with pytest.raises(ValueError, match="neighbour_convexity"):
        PreprocessSpec(neighbour_convexity=1.5)


def test_focused_crop_is_what_the_model_reads_at_source_resolution():
    """Karyograms draw this: the tilted rod comes back upright, cut to itself, not resized."""
    from karyo.runtime.preprocess import focused_crop

    shown = focused_crop(banded_rod(50).astype(np.float32), PreprocessSpec(size=48, width=16))
    assert 88 <= shown.shape[0] <= 98 and 14 <= shown.shape[1] <= 24  # rod 90 x 14, plus 2 px margins
    raw = focused_crop(banded_rod(50).astype(np.float32), PreprocessSpec(size=48, width=16, align_axis=False))
    assert raw.shape[0] < 80 and raw.shape[1] > 60


def test_percentile_of_matches_numpy() -> None:
    """The hot path's partial-sort percentile is numpy's linear percentile, ties and tiny arrays included."""
    from karyo.runtime.paper import percentile_of

    rng = np.random.default_rng(3)
    arrays = [np.array([7.0], np.float32), np.array([2.0, 9.0], np.float32), rng.random(801).astype(np.float32),
              rng.integers(0, 4, 1000).astype(np.float32), rng.normal(size=3000)]
    for values in arrays:
        before = values.copy()
        for q in (0.0, 5.0, 50.0, 95.0, 99.9, 100.0):
            assert percentile_of(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-6, abs=1e-6)
        assert np.array_equal(values, before)  # the caller's pixels are not reordered


def _rod(paper: int = 240, black_on_edge: bool = False) -> np.ndarray:
    """A banded rod, tightly cut; `black_on_edge`: a saturated black band touches the top edge over two pixels."""
    crop = np.full((50, 16), paper, np.uint8)
    crop[1:49, 4:12] = 150
    crop[12:16, 4:12] = 40
    crop[30:34, 4:12] = 70
    if black_on_edge:
        crop[0:2, 7:9] = 0  # the chromosome's own black, not a tool's fill
    return crop


def test_a_chromosome_s_own_black_pixels_on_the_edge_are_not_taken_for_fill():
    from karyo.runtime.paper import fill_with_paper

    crop = _rod(black_on_edge=True).astype(np.float32)
    assert fill_with_paper(crop) is crop


def test_a_black_frame_around_the_crop_reads_as_paper():
    """Padded to a canvas with black, the frame was the 'paper' and the real paper an object: 4% of
    fold 1's held-out crops read right, 96% once the fill is read as paper."""
    crop = _rod()
    black = cv2.copyMakeBorder(crop, 10, 10, 10, 10, cv2.BORDER_CONSTANT, value=0)
    paper = cv2.copyMakeBorder(crop, 10, 10, 10, 10, cv2.BORDER_CONSTANT, value=240)
    spec = PreprocessSpec(size=48, width=16, stain_level=0.8)
    np.testing.assert_allclose(preprocess_array(black, spec), preprocess_array(paper, spec), atol=1e-5)


@pytest.mark.parametrize("scale,interpolation", [(0.8, cv2.INTER_AREA), (1.25, cv2.INTER_LINEAR), (2.0, cv2.INTER_CUBIC)])
def test_a_black_frame_resized_with_the_crop_reads_as_paper(monkeypatch, scale: float, interpolation: int):
    """Framed in black, then resized (a fixed-size export), the frame's inner edge is blended into
    the picture a line or two deep; read as the picture's border, that blend was the paper, at a
    fraction of its level, and the crop refused as bright-on-dark (fold 1's held-out crops framed
    12 px and scaled 0.8: 3,798 of 4,054 refused). The blended lines are fill now. A fluorescence
    picture so framed and resized is still refused."""
    from karyo.runtime import paper as paper_module

    def framed(crop: np.ndarray, value: int) -> np.ndarray:
        frame = cv2.copyMakeBorder(crop, 12, 12, 9, 9, cv2.BORDER_CONSTANT, value=value)
        size = (round(frame.shape[1] * scale), round(frame.shape[0] * scale))
        return cv2.resize(frame, size, interpolation=interpolation)

    spec = PreprocessSpec(size=48, width=16, stain_level=0.8)
    legacy = dataclasses.replace(spec, margin_invariant=False)
    black, paper = framed(_rod(), 0), framed(_rod(), 240)
    filled = paper_module.paper_filled(black.astype(np.float32))
    # cubic rings: past its blend the paper overshoots to the ceiling, and is read there
    assert filled.gray[0, 0] == (255.0 if interpolation == cv2.INTER_CUBIC else 240.0)
    # Cut at its own box (margin_invariant), the rod, its tips a pixel from the edge, loses to the
    # fill the tip rows blended with black, so it stands a row or two shorter than with paper: up to
    # 0.06; with the 2 px of paper older bundles keep, the cut reaches past the tips either way.
    assert np.abs(preprocess_array(black, spec) - preprocess_array(paper, spec)).mean() < 0.06
    assert np.abs(preprocess_array(black, legacy) - preprocess_array(paper, legacy)).mean() < 0.03
    assert "bright chromosome on a dark ground" in _refusal(framed(255 - _rod(), 0), spec)
    # the blend read as the picture's border: the paper 35 to 54 levels low, and scaled up refused
    monkeypatch.setattr(paper_module, "FRAME_SEAM_LINES", 0)
    assert paper_module.paper_filled(black.astype(np.float32)).gray[0, 0] <= 205.0
    if scale > 1:
        assert "bright chromosome on a dark ground" in _refusal(black, spec)


@pytest.mark.parametrize("level,width,inset", [(76, 1, 0), (76, 2, 0), (150, 2, 0), (0, 1, 3), (76, 1, 4)])
def test_a_box_drawn_around_the_crop_reads_as_paper(monkeypatch, level: int, width: int, inset: int):
    """A selection box burnt in and cut with the crop (red reads 76, green 150) was the paper: of the
    20,322 real crops given a 1 px red one (benchmarks/polarity.py, outlined), 3,689 were refused as
    bright-on-dark, 11 now. Cut with paper outside it, the box was read as part of the chromosome
    (fold 1's held-out crops with a black one 2 px in: 80.14% right from the image, 95.19% now). A
    margin of paper, or a ground of one grey that goes on inside, is none."""
    from karyo.runtime import paper as paper_module

    spec = PreprocessSpec(size=48, width=16, stain_level=0.8)
    rod = cv2.copyMakeBorder(_rod(), inset, inset, inset, inset, cv2.BORDER_CONSTANT, value=240)
    outlined = rod.copy()
    box = np.zeros(rod.shape, dtype=bool)
    box[inset:rod.shape[0] - inset, inset:rod.shape[1] - inset] = True
    box[inset + width:rod.shape[0] - inset - width, inset + width:rod.shape[1] - inset - width] = False
    outlined[box] = level
    assert paper_module._outline_rings(outlined.astype(np.float32)) == inset + width
    # 2 px deep the box covers the rod's end rows: 0.007 of the input range
    assert np.abs(preprocess_array(outlined, spec) - preprocess_array(rod, spec)).mean() < 0.01
    assert paper_module._outline_rings(rod.astype(np.float32)) == 0
    assert paper_module._outline_rings((255 - rod).astype(np.float32)) == 0
    if width == 2 or inset:  # read as the crop's border or a part of it (1 px on the edge: a seam all round)
        monkeypatch.setattr(paper_module, "OUTLINE_SHARE", 1.1)
        try:
            off = float(np.abs(preprocess_array(outlined, spec) - preprocess_array(rod, spec)).mean())
        except ImageError:
            off = 1.0
        assert off > 0.1  # 0.14 to 0.28 of the input range, or refused


def test_uneven_dim_edges_inside_a_frame_are_not_taken_for_its_blend(monkeypatch):
    """A frame blends into a resized picture in one ratio per side; a bright chromosome fades to its
    ground unevenly. Taking any side darker than the line inside over half its length let 1,038 more
    of the 20,322 framed fluorescence-like copies of benchmarks/polarity.py through."""
    from karyo.runtime import paper as paper_module

    rng = np.random.default_rng(3)
    bright = np.full((50, 16), 150, np.float32)  # bright, filling its picture, banded brighter still
    bright[10:16], bright[30:36] = 210, 200
    for side in (np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1]):  # 70% of each side dimmed, unevenly
        size = bright[side].size
        bright[side] *= np.where(rng.random(size) < 0.7, rng.uniform(0.2, 0.9, size), 1.0)
    picture = cv2.copyMakeBorder(np.round(bright).astype(np.uint8), 8, 8, 8, 8, cv2.BORDER_CONSTANT, value=0)
    spec = PreprocessSpec(size=48, width=16, stain_level=0.8)
    assert "(90% of the picture" in _refusal(picture, spec)
    monkeypatch.setattr(paper_module, "SEAM_STEADY_SHARE", 0.0)  # any ratio taken for a frame's blend
    assert preprocess_array(picture, spec).shape == (48, 16, 1)


def test_black_corners_of_a_turned_crop_read_as_paper():
    from karyo.runtime.paper import paper_filled

    crop = _rod()
    centre, size = (8.0, 25.0), (60, 60)
    turn = cv2.getRotationMatrix2D(centre, 20, 1.0)
    turn[:, 2] += (size[0] / 2 - centre[0], size[1] / 2 - centre[1])
    black = cv2.warpAffine(crop, turn, size, flags=cv2.INTER_LINEAR, borderValue=0)
    paper = cv2.warpAffine(crop, turn, size, flags=cv2.INTER_LINEAR, borderValue=240)
    spec = PreprocessSpec(size=48, width=16, stain_level=0.8)
    read_black, read_paper = preprocess_array(black, spec), preprocess_array(paper, spec)
    # the corners' seam is filled a pixel deep, and with it a pixel of the rod where it nears the
    # turned edge: 0.0002 of the input range on average (the ring's median, read before, gave the
    # same here; the tight rod below is where they part); read as black the corners differed by 104
    assert np.abs(read_black - read_paper).mean() < 0.002
    # cut tight (a pixel of paper beside the rod), most of the ring around the corners is the rod
    # itself: its median, 151, is the rod's own level (150) and was taken for the paper (240); its
    # upper quartile, 181, is read instead
    tight = cv2.warpAffine(crop[:, 3:13], turn, size, flags=cv2.INTER_LINEAR, borderValue=0).astype(np.float32)
    filled = paper_filled(tight)
    assert filled.fill_pixels == 3190 and filled.gray[0, 0] == pytest.approx(181.25)
    with pytest.raises(ImageError, match="no chromosome in the image"):  # all fill: still a blank
        preprocess_array(np.zeros((40, 20), np.uint8), spec)


@pytest.mark.parametrize("degrees", [0.5, 1.0, 2.0, 89.5, 90.0])
def test_a_crop_turned_by_a_hair_inside_black_corners_reads_as_with_paper_corners(degrees: float):
    """Turned a degree or so (or nearly 90) on a canvas grown to hold it, a crop has no black
    fill, only seams along its sides blended with black: its paper was read at half its level and
    the crop refused as bright-on-dark (80% "bright" here; fold 1's held-out crops turned 0.5
    degrees: 3,980 of 4,054 refused). The seams are fill now, and the paper is read inside them."""
    from karyo.runtime.focus import rotate_whole
    from karyo.runtime.paper import paper_filled

    spec = PreprocessSpec(size=48, width=16, stain_level=0.8)
    rod = _rod().astype(np.float32)
    black = np.round(rotate_whole(rod, degrees, 0.0)).astype(np.uint8)
    paper = np.round(rotate_whole(rod, degrees, 240.0)).astype(np.uint8)
    border = np.concatenate([black[0], black[-1], black[:, 0], black[:, -1]])
    assert np.mean(border <= 2) < 0.4 and np.median(border) < 170  # no frame to find, paper half read
    filled = paper_filled(black.astype(np.float32))
    assert filled.gray[0, 0] == 240.0 and filled.fill_pixels >= 2 * sum(black.shape) - 4
    legacy = dataclasses.replace(spec, margin_invariant=False)
    difference = np.abs(preprocess_array(black, legacy) - preprocess_array(paper, legacy))
    # the seams are filled a pixel deeper than they reach; near 90 degrees the rod's tips, a pixel
    # from the paper's edge, lie in that pixel (mean 0.075 of the input range at 89.5 degrees)
    assert difference.mean() < (0.1 if degrees > 45 else 0.02)
    # cut at its own box, the rod loses its blended tip rows to the fill (the resized frames' test)
    assert np.abs(preprocess_array(black, spec) - preprocess_array(paper, spec)).mean() < (0.1 if degrees > 45 else 0.06)


def test_a_quarter_turn_with_a_black_line_along_one_side_reads_as_with_paper_corners():
    """A tool that turns about the crop's middle on a canvas a pixel larger leaves a black line
    along one side and blended seams on the two beside it, whose corner pixels are that black
    line. Taken for no seam, the paper was read at half its level: 44 of the 20,322 real crops
    turned so were refused as bright-on-dark (benchmarks/polarity.py, turned_quarter), 1 now."""
    import sys

    from karyo.runtime.paper import paper_filled

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from polarity import turned

    spec = PreprocessSpec(size=48, width=16, stain_level=0.8)
    rod = _rod()
    rod[49, 4:12] = 150  # cut tight at its lower end, which is near-black there, as real crops are:
    rod[46:50, 6:9] = 8  # that end's side steps down from the line inside over 14 of its 17 pixels
    black, paper = turned(rod.astype(np.float32), 90.0), turned(rod.astype(np.float32), 90.0, fill=240.0)
    assert black[0].max() == 0 and np.mean(black[:, -1] <= black[:, -2] - 8) == 14 / 17
    filled = paper_filled(black)
    assert filled.gray[5, 0] == 240.0 and filled.gray[5, -1] == 240.0
    for chosen, tolerance in ((spec, 0.06), (dataclasses.replace(spec, margin_invariant=False), 0.02)):
        as_black, as_paper = (preprocess_array(np.round(image).astype(np.uint8), chosen) for image in (black, paper))
        assert np.abs(as_black - as_paper).mean() < tolerance  # the tips, as in the test above


def test_a_chromosome_or_a_mark_along_a_side_is_not_taken_for_a_seam():
    """Seams come on all four sides, or on two opposite ones blended corner to corner or in a steady
    ratio: one side darker than the line inside it is a chromosome or a mark (62% of a side at most
    in the real crops here), and so is a bright chromosome on a dark ground that ends at two sides."""
    from karyo.runtime.paper import paper_filled

    along = _rod()[:, 4:14].astype(np.float32)  # the rod itself is the left side, bands and all
    assert paper_filled(along).gray is along
    marked = _rod().astype(np.float32)
    marked[-1, :] = 100  # a stray line under the whole bottom side
    assert paper_filled(marked).gray is marked
    # bright on a dark ground and cut to its ends, which are dimmer than the rod one pixel in: the
    # top and bottom sides step up over 10 of their 14 pixels, the ground at the corners does not
    inverted = np.full((50, 14), 15, np.float32)
    inverted[:, 2:12] = 105
    inverted[[0, -1], 2:12] = 60
    assert paper_filled(inverted).gray is inverted
    turned = _rod().astype(np.float32)  # as a hair's turn leaves it: every side blended half with black
    turned[[0, -1], :] *= 0.5
    turned[:, [0, -1]] *= 0.5
    filled = paper_filled(turned)
    # blended in one ratio all round, as here, it is also an outline (below): the whole ring is fill
    assert filled.fill_pixels >= 2 * (50 + 16) - 4 and filled.gray[-1, 0] == 240.0 and filled.gray[0, 8] == 240.0


def test_a_bright_chromosome_on_a_dark_ground_is_refused_in_one_line():
    """A fluorescence or inverted picture read as G-bands got a confident wrong label; now it is named."""
    from karyo.runtime.paper import BRIGHT_ON_DARK_SHARE, brighter_than_paper_share

    spec = PreprocessSpec(size=48, width=16, stain_level=0.8)
    rod = _rod()
    assert preprocess_array(rod, spec).shape == (48, 16, 1)
    inverted = 255 - rod  # ground 15, the rod 105 and its bands 215 and 185: 384 of 800 pixels bright
    assert brighter_than_paper_share(inverted.astype(np.float32), 15.0) == 384 / 800
    # the ground masked to 0, the edge soft as a microscope draws it (cut hard, the ground would be
    # read at the rod's own level around the fill, and the rod read: 39% of the real crops so made)
    on_black = cv2.GaussianBlur(np.clip(240 - rod.astype(np.int16), 0, 255).astype(np.uint8), (0, 0), 1.0)
    framed = cv2.copyMakeBorder(inverted, 6, 6, 6, 6, cv2.BORDER_CONSTANT, value=0)  # a tool's frame around it
    for picture in (inverted, on_black, framed):
        with pytest.raises(ImageError) as refused:
            preprocess_array(picture, spec)
        message = str(refused.value)
        assert message.startswith("bright chromosome on a dark ground (") and "invert it" in message
        assert "\n" not in message
    assert "(48% of the picture" in _refusal(inverted, spec)
    assert BRIGHT_ON_DARK_SHARE == 0.35
    # a G-banded crop with some bright pixels (a label, a reflection) is read, up to the limit
    speck = rod.copy()
    speck[20:30, 0:4] = 255  # 40 of 800 pixels 15 levels above the paper: not far enough to count
    speck[40:50, 12:16] = 255
    assert brighter_than_paper_share(speck.astype(np.float32), 240.0) == 0.0
    assert preprocess_array(speck, spec).shape == (48, 16, 1)


def _refusal(picture: np.ndarray, spec: PreprocessSpec) -> str:
    with pytest.raises(ImageError) as refused:
        preprocess_array(picture, spec)
    return str(refused.value)


@pytest.mark.realdata
def test_real_crops_are_read_and_their_fluorescence_like_copies_refused(shared_data):
    """benchmarks/polarity.py on the first 150 crops of each real folder: no G-banded copy refused."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from polarity import measure

    result = measure([shared_data / "pki-dev", shared_data / "pampaj7"], limit=150)
    rows = result["variants"]
    assert result["crops"] == 300
    g_banded = ("as_is", "black_frame", "black_frame_resized", "outlined", "turned", "turned_slightly", "turned_quarter")
    assert [rows[name]["refused"] for name in g_banded] == [0] * 7
    framed = ("dark_ground", "dark_ground_framed", "dark_ground_framed_resized")
    assert all(rows[name]["refused"] >= 0.95 * 300 for name in framed)
    assert rows["black_ground_turned"]["refused"] >= 0.6 * 300 and rows["black_ground"]["refused"] >= 0.5 * 300


def _flush_chromosome(length: int = 70, thick: int = 16, paper: int = 235) -> np.ndarray:
    """A banded chromosome with round ends and soft edges, cut flush with its own box, as a
    karyotyping system cuts them (every pki-dev crop: its object touches all four edges)."""
    canvas = np.full((length + 20, thick + 20), float(paper), np.float32)
    body = np.zeros(canvas.shape, np.uint8)
    middle, radius = 10 + thick // 2, thick // 2
    for end in (10 + radius, 10 + length - radius):
        cv2.ellipse(body, (middle, end), (radius, radius), 0, 0, 360, 1, -1)
    body[10 + radius : 10 + length - radius, 10 : 10 + thick] = 1
    rows = np.arange(canvas.shape[0])[:, None]
    canvas = np.where(body > 0, 120.0 - 70.0 * (np.sin(rows / 4.0) > 0.3), canvas).astype(np.float32)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 1.0)
    ys, xs = np.nonzero(canvas < paper - 10)
    return canvas[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


@pytest.mark.parametrize("margin", [3, 8, 32])
def test_the_paper_a_lab_leaves_around_a_chromosome_changes_neither_its_picture_nor_its_size(margin: int):
    """Cut flush or with paper around it, a chromosome is one picture: the old pipeline kept 2 px of
    paper that only margined crops have (a rim the model never saw in flush training crops), and
    its closing grew an object along the edges it touches; fold 1's held-out crops given 3 to 32 px
    read 96.4% instead of 96.9% from the image alone with a bundle trained the old way."""
    flush = _flush_chromosome()
    margined = cv2.copyMakeBorder(flush, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=235.0)
    spec = PreprocessSpec(size=48, width=16, stain_level=0.8)
    legacy = dataclasses.replace(spec, margin_invariant=False)
    (new_flush, new_flush_size), (new_margined, new_margined_size) = prepare_gray(flush, spec), prepare_gray(margined, spec)
    (old_flush, old_flush_size), (old_margined, old_margined_size) = prepare_gray(flush, legacy), prepare_gray(margined, legacy)
    assert np.abs(new_flush - new_margined).mean() < 0.012
    assert np.abs(old_flush - old_margined).mean() > 0.04
    # the margined picture had paper at its top and bottom rows, the flush one the chromosome's ends
    assert old_margined[0].max() < 0.05 < old_flush[0].max()
    assert new_margined[0].max() > 0.05
    # the area: what the Otsu level moves with the paper's share stays (+7% here), not the -9% of the edges
    assert new_flush_size[0] == new_margined_size[0] == old_flush_size[0]
    assert 1.0 < new_margined_size[1] / new_flush_size[1] < 1.08
    assert old_margined_size[1] / old_flush_size[1] < 0.92


def test_real_crops_given_paper_around_them_read_as_cut(shared_data):
    """Every 250th pki-dev crop (cut flush) and 40th pampaj7 crop (0 to 4 px of paper) with 6 px more
    of their own paper: the same model input for most, and the same area within 2% (median)."""
    from karyo.runtime.dataset import read_labeled_folder
    from karyo.runtime.paper import fill_with_paper
    from karyo.runtime.preprocess import background_level, load_gray

    samples = read_labeled_folder(shared_data / "pki-dev")[::250] + read_labeled_folder(shared_data / "pampaj7")[::40]
    spec = PreprocessSpec(size=96, width=32, stain_level=0.8)
    legacy = dataclasses.replace(spec, margin_invariant=False)
    differences: dict[bool, list[float]] = {True: [], False: []}
    area_ratios: dict[bool, list[float]] = {True: [], False: []}
    for sample in samples:
        cut = load_gray(sample.path)
        paper = background_level(fill_with_paper(cut))
        margined = cv2.copyMakeBorder(cut, 6, 6, 6, 6, cv2.BORDER_CONSTANT, value=float(paper))
        for chosen in (spec, legacy):
            (as_cut, cut_size), (with_paper, paper_size) = prepare_gray(cut, chosen), prepare_gray(margined, chosen)
            differences[chosen.margin_invariant].append(float(np.abs(as_cut - with_paper).mean()))
            area_ratios[chosen.margin_invariant].append(abs(float(np.log(paper_size[1] / cut_size[1]))))
    assert len(samples) == 142
    assert np.median(differences[True]) < 0.005 < 0.03 < np.median(differences[False])
    assert np.median(area_ratios[True]) < 0.02 < 0.035 < np.median(area_ratios[False])
