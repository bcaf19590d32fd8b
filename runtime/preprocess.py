"""The one image-preprocessing path, shared by training and serving.

Training imports this module too, so a model never sees pixels prepared differently from the way
the scanner PC prepares them. Every parameter lives in :class:`PreprocessSpec`, which is stored
in the bundle manifest: code constants here are only defaults for new models.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

# OpenCV reads its decoder pixel limit once, from the environment; set ours before it loads so a
# decompression bomb is refused by the decoder itself instead of allocating gigabytes.
DEFAULT_MAX_PIXELS = 40_000_000
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(DEFAULT_MAX_PIXELS))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from .focus import (  # noqa: E402
    BLANK_CONTRAST, DEFAULT_NEIGHBOUR_CONVEXITY, ChromosomeSize, FoundChromosome, find_chromosome,
)
from .paper import (  # noqa: E402
    BRIGHT_ON_DARK_SHARE, BRIGHTER_THAN_PAPER, background_level, brighter_than_paper_share, fill_with_paper,
    paper_filled,
)


def _quiet_opencv() -> None:
    """Scanner TIFFs carry vendor tags that make libtiff warn on every file; keep the log clean."""
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # very old builds
        pass


_quiet_opencv()

IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg"})
MAX_FILE_BYTES = 64 * 1024 * 1024


class ImageError(ValueError):
    """An input that cannot become a model tensor; the message is meant for the user."""


# 3: `align_axis`; 4: `stain_level`; 5: `centred_crop`; 6: `margin_invariant`; 7:
# `neighbour_convexity`. A runtime refuses a manifest from a newer pipeline rather than serve it wrongly.
PREPROCESS_VERSION = 7


@dataclass(frozen=True)
class PreprocessSpec:
    """How a crop becomes a model input. Serialized into the bundle manifest.

    `size` x `width` is the model input (height x width). A chromosome is long and thin, so a tall
    box spends the pixels along the axis that carries the bands: the crop is padded to the box's
    aspect ratio with its background level and resized, never stretched, so the crop's own
    length-to-width ratio (a strong cue for which chromosome it is) survives. `width=None` means a
    square box (the layout of bundles written before the width existed); each architecture's
    default box lives with the architecture (`karyo.export.models.DEFAULT_INPUT`).

    `invert` maps dark bands on a light background to bright-on-black, so zero padding and the
    background agree. The next four steps live in `karyo.runtime.focus`. `focus_main_object`
    blanks the neighbours that reach into crops cut as bounding boxes; `tight_crop` cuts the crop
    down to its chromosome, so a lab's margins do not change how large a chromosome looks (see
    `find_chromosome()`). `align_axis` turns a chromosome that lies tilted in its crop upright
    (see `align_upright()`): crops cut as bounding boxes out of a metaphase are not straightened,
    and a tilted chromosome fitted into the tall box would otherwise shrink to a fraction of it.
    `centred_crop` says crops are cut centred on their chromosome, so a neighbour that touches the
    chromosome and enters through the crop's edge can be cut off where a centred crop would have
    ended (see `beyond_mirrored_margin()`); switch it off (`karyo-export train --no-centred-crop`)
    for a lab whose crops hold the chromosome against one side. `neighbour_convexity` makes that cut
    only where the chromosome's object is at least that much more convex without the part (a
    neighbour merged in at an angle makes a crooked pair), so a chromosome lying against one edge of
    a crop cut by hand with paper on the other sides keeps its own side (see `label_objects()`);
    None (bundles written before it) cuts whenever the margins are uneven.

    `margin_invariant` makes the paper a lab leaves around its chromosomes change nothing: the
    chromosome is cut at its object's own box, and its object is found as if the paper went on past
    the crop's edge (`find_chromosome`, `label_objects`). Training crops cut flush (all of
    pki-dev's) and a lab's crops cut with a margin then give the model the same picture and the
    same size. Before it, 2 px of paper were kept, which only crops with a margin have: fold 1's
    held-out crops given 3 to 32 px of paper read 0.4 points lower from the image alone (96.4
    against 96.9%), and a cell mixing flush and margined crops 0.3 lower with sizes. Bundles
    written before it keep the old way.

    `stain_level` evens out staining between slides and labs: a chromosome's darkness (how far its
    pixels lie below the background, as a fraction of the background) is scaled so its 95th
    percentile reaches this level, and the background becomes exactly 0. Labs stain and expose
    differently (pampaj7's chromosomes reach a darkness of 0.65 where pki-dev's reach 0.89), and
    a model trained on one lab's contrast otherwise reads the other's as a different banding.
    None (bundles written before it existed) leaves gray levels as they are.
    """

    size: int = 64
    width: int | None = None
    invert: bool = True
    mean: float = 0.0
    std: float = 1.0
    focus_main_object: bool = True
    tight_crop: bool = True
    align_axis: bool = True
    centred_crop: bool = True
    margin_invariant: bool = True
    neighbour_convexity: float | None = DEFAULT_NEIGHBOUR_CONVEXITY
    stain_level: float | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        # A hand-edited manifest must fail at load time with a message, not deep inside OpenCV.
        if self.width is None:
            object.__setattr__(self, "width", self.size)
        for name in ("size", "width"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not 1 <= value <= 4096:
                raise ValueError(f"preprocess {name} must be an integer in 1..4096, got {value!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(value):
                raise ValueError(f"preprocess {name} must be a finite number, got {value!r}")
        if self.std == 0:
            raise ValueError("preprocess std must not be 0")
        if self.stain_level is not None:
            level = self.stain_level
            if not isinstance(level, numbers.Real) or isinstance(level, bool) or not 0.05 <= level <= 1.0:
                raise ValueError(f"preprocess stain_level must be a number in 0.05..1 or null, got {level!r}")
            object.__setattr__(self, "stain_level", float(level))
        if self.neighbour_convexity is not None:
            gain = self.neighbour_convexity
            if not isinstance(gain, numbers.Real) or isinstance(gain, bool) or not 0.0 <= gain <= 1.0:
                raise ValueError(f"preprocess neighbour_convexity must be a number in 0..1 or null, got {gain!r}")
            object.__setattr__(self, "neighbour_convexity", float(gain))
        if not isinstance(self.max_pixels, numbers.Integral) or self.max_pixels < 1:
            raise ValueError(f"preprocess max_pixels must be a positive integer, got {self.max_pixels!r}")
        # numpy scalars from training code would make the manifest JSON unwritable: store plain types
        for name, kind in (("size", int), ("width", int), ("mean", float), ("std", float), ("max_pixels", int)):
            object.__setattr__(self, name, kind(getattr(self, name)))
        object.__setattr__(self, "invert", bool(self.invert))
        object.__setattr__(self, "focus_main_object", bool(self.focus_main_object))
        object.__setattr__(self, "tight_crop", bool(self.tight_crop))
        object.__setattr__(self, "align_axis", bool(self.align_axis))
        object.__setattr__(self, "centred_crop", bool(self.centred_crop))
        object.__setattr__(self, "margin_invariant", bool(self.margin_invariant))

    def to_dict(self) -> dict[str, Any]:
        return {"version": PREPROCESS_VERSION, "pipeline": "gray-pad-to-box-aspect-area-resize", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessSpec":
        version = data.get("version", 1)
        if not isinstance(version, numbers.Integral) or version > PREPROCESS_VERSION:
            raise ValueError(f"preprocess version {version!r} is newer than this karyo reads ({PREPROCESS_VERSION}): update karyo")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("width", None)  # version-1 manifests: square input
        values.setdefault("tight_crop", False)  # bundles written before it existed were trained without
        values.setdefault("align_axis", False)  # likewise
        values.setdefault("centred_crop", False)  # likewise
        values.setdefault("margin_invariant", False)  # likewise
        values.setdefault("neighbour_convexity", None)  # likewise
        values.setdefault("stain_level", None)  # likewise
        return cls(**values)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.size, self.width, 1)


def read_bytes(path: str | Path) -> bytes:
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageError(f"{path}: empty file")
    if size > MAX_FILE_BYTES:
        raise ImageError(f"{path}: file is {size} bytes, over the {MAX_FILE_BYTES} byte limit")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None


def decode_gray(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode PNG/TIFF/BMP/JPEG bytes (8/16-bit, gray/RGB/RGBA) to float32 gray in [0, 255]."""
    if len(data) == 0:
        raise ImageError("empty file")
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageError(f"cannot decode image ({_first_line(str(exc))})") from None
    if image is None:
        raise ImageError("not a readable PNG/TIFF/BMP/JPEG image (corrupt, truncated or over the pixel limit)")
    return to_gray(image, max_pixels=max_pixels)


# Microscope cameras write 10-, 12- or 14-bit samples into 16-bit (or wider) files. Divided by the
# type's maximum, white paper at 1023 or 4095 arrives near-black, and a chromosome differs from it by
# a few grey levels at most: too little to find (BLANK_CONTRAST), and a bundle trained before the
# staining step reads it dark. Samples are scaled by the bit depth their values fit in instead.
SAMPLE_BIT_DEPTHS: tuple[int, ...] = (8, 10, 12, 14, 16)


def sample_scale(image: np.ndarray) -> float:
    """The factor that maps an image's samples to [0, 255]: 1 for 8-bit, by the smallest of
    SAMPLE_BIT_DEPTHS the values fit in for wider types, and floats in [0, 1] as fractions."""
    if image.dtype == np.uint8:
        return 1.0
    if image.dtype.kind == "b":
        return 255.0
    top = float(image.max()) if image.size else 0.0
    if image.dtype.kind == "f" and top <= 1.0:
        return 255.0
    integer = image.dtype.kind in "iu"
    ceiling = float(np.iinfo(image.dtype).max) if integer else float("inf")  # int8, int16: 127, 32767
    for bits in SAMPLE_BIT_DEPTHS:
        if top < (1 << bits):
            return 255.0 / min((1 << bits) - 1, ceiling)
    # beyond 16 bits: the integer type's own range, a float's brightest sample
    return 255.0 / (ceiling if integer else top)


def to_gray(image: np.ndarray, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Any decoded array (HxW, HxWx1/3/4; uint8/uint16/float/...) to float32 gray in [0, 255].

    Samples wider than 8 bits are scaled by the bit depth their values fit in (`sample_scale`).
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.size == 0 or min(image.shape[:2]) == 0:
        raise ImageError(f"zero-size or malformed image, shape {tuple(image.shape)}")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ImageError(f"image is {image.shape[1]}x{image.shape[0]} px, over the {max_pixels} pixel limit")
    if image.dtype.kind not in "iubf":
        raise ImageError(f"unsupported pixel type {image.dtype}")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused next
        scaled = image.astype(np.float32)
    if image.dtype.kind == "f" and not np.all(np.isfinite(scaled)):
        raise ImageError("image holds NaN or infinite values (or values beyond 32-bit float range)")
    factor = sample_scale(image)
    if factor != 1.0:
        scaled = scaled * np.float32(factor)
    if scaled.ndim == 3:
        channels = scaled.shape[2]
        if channels == 1:
            scaled = scaled[:, :, 0]
        elif channels in (3, 4):
            rgb = scaled[:, :, :3]
            gray = rgb[:, :, 0] * 0.114 + rgb[:, :, 1] * 0.587 + rgb[:, :, 2] * 0.299  # OpenCV order: BGR
            if channels == 4:  # transparent pixels are background (white paper)
                alpha = scaled[:, :, 3] / 255.0
                gray = gray * alpha + 255.0 * (1.0 - alpha)
            scaled = gray
        else:
            raise ImageError(f"unsupported channel count {channels}")
    return np.clip(scaled, 0.0, 255.0).astype(np.float32, copy=False)


# What `karyo-export train` writes into new bundles: about where the straightened lab's
# chromosomes already lie (0.89), so the even-out step changes its crops little and the other lab's a lot.
DEFAULT_STAIN_LEVEL = 0.8


# Staining is evened out within these bounds: a crop this far from the level is more likely a
# speck or an overexposed blot than a chromosome, and amplifying it further would amplify noise.
STAIN_GAIN_RANGE = (1.0 / 3.0, 3.0)


def focused_crop(gray: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The crop as the model reads it, at source resolution: neighbours blanked, cut down, turned
    upright (as `spec` says). Karyograms show this, so a reviewer sees the chromosome the call is
    about, standing the way a karyogram stands it."""
    gray = fill_with_paper(gray)
    return _find_as_specified(gray, background_level(gray), spec).gray


def crop_as_read(source: str | Path | np.ndarray, spec: PreprocessSpec, turned: bool = False) -> np.ndarray:
    """A crop (a file or a decoded array) as the model read it, for a picture: focused as `spec`
    says, and turned half a circle back when it was read turned, so it stands p arm up. The one
    path karyograms, audit pictures and the error gallery draw crops through; ImageError as decoding."""
    gray = to_gray(source, spec.max_pixels) if isinstance(source, np.ndarray) else load_gray(source, spec.max_pixels)
    crop = focused_crop(gray, spec)
    return np.ascontiguousarray(crop[::-1, ::-1]) if turned else crop


def _find_as_specified(gray: np.ndarray, background: float, spec: PreprocessSpec, stain: bool = False) -> FoundChromosome:
    """`find_chromosome` with the focusing steps `spec` names: the one place a spec field reaches it,
    so the karyogram's picture and the model input cannot drift apart when a step is added."""
    return find_chromosome(
        gray, background, blank=spec.focus_main_object, tight=spec.tight_crop, align=spec.align_axis, stain=stain,
        centred=spec.centred_crop, margin_invariant=spec.margin_invariant, neighbour_convexity=spec.neighbour_convexity,
    )


def measure_chromosome(gray: np.ndarray, align: bool = False) -> ChromosomeSize | None:
    """(length, area) in source pixels of the crop's chromosome, None for a blank crop."""
    gray = fill_with_paper(gray)
    return find_chromosome(gray, background_level(gray), blank=False, tight=False, align=align, margin_invariant=True).size


def pad_to_aspect(gray: np.ndarray, value: float, box_height: int, box_width: int) -> np.ndarray:
    """Pad (centred, with `value`) to the smallest canvas with the box's aspect ratio that holds the crop."""
    height, width = gray.shape
    canvas_h = max(height, int(np.ceil(width * box_height / box_width - 1e-9)))
    canvas_w = max(width, int(np.ceil(canvas_h * box_width / box_height - 1e-9)))
    top = (canvas_h - height) // 2
    left = (canvas_w - width) // 2
    return cv2.copyMakeBorder(
        gray, top, canvas_h - height - top, left, canvas_w - width - left, cv2.BORDER_CONSTANT, value=float(value)
    )


def preprocess_gray(gray: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """float32 gray [0, 255] (any size) -> float32 HxWx1 model input."""
    return prepare_gray(gray, spec)[0]


def prepare_gray(gray: np.ndarray, spec: PreprocessSpec) -> tuple[np.ndarray, ChromosomeSize]:
    """The model input and the chromosome's size, measured on the same objects the focus step found.

    A crop with nothing in it, or one whose chromosome is brighter than its ground (a fluorescence
    or inverted picture), is an ImageError, like a corrupt file: every command then names it and
    goes on with the rest, and training skips it rather than learn it under its label.
    """
    if gray.ndim != 2 or min(gray.shape) == 0:
        raise ImageError(f"zero-size or malformed image, shape {tuple(gray.shape)}")
    height, width = gray.shape
    canvas_h = max(height, width * spec.size / spec.width)
    canvas_w = canvas_h * spec.width / spec.size
    if canvas_h * canvas_w > spec.max_pixels:  # a 1 x 30,000,000 strip would pad to a 30M x 30M square
        raise ImageError(
            f"image is {width}x{height} px; padded to the model's aspect ratio it would exceed "
            f"the {spec.max_pixels} pixel limit (not a chromosome crop?)"
        )
    gray, fill_pixels = paper_filled(gray)
    background = background_level(gray)
    bright = brighter_than_paper_share(gray, background, fill_pixels)
    if bright >= BRIGHT_ON_DARK_SHARE:
        raise ImageError(
            f"bright chromosome on a dark ground ({bright:.0%} of the picture is {BRIGHTER_THAN_PAPER:g}+ grey levels "
            "above its ground): a fluorescence (DAPI, Q-band) or inverted image? The model reads G-banded crops, "
            "dark bands on light paper: invert it to that first"
        )
    gray, size, stain = _find_as_specified(gray, background, spec, stain=spec.stain_level is not None)
    if size is None:
        # Read anyway, a blank gets some label (21 at 0.4 from a fold-1 bundle), and in a cell it
        # takes a chromosome's place in the count.
        raise ImageError(
            f"no chromosome in the image: no pixel differs from the background by {BLANK_CONTRAST:g} grey levels "
            "(an empty cut or a blank frame)"
        )
    canvas = pad_to_aspect(gray, background, spec.size, spec.width)
    interpolation = cv2.INTER_AREA if canvas.shape[0] >= spec.size else cv2.INTER_LINEAR
    resized = cv2.resize(canvas, (spec.width, spec.size), interpolation=interpolation)
    if spec.stain_level is None:
        scaled = resized * np.float32(1.0 / 255.0)
        if spec.invert:
            scaled = np.float32(1.0) - scaled
    else:
        darkness = (np.float32(background) - resized) / np.float32(max(background, 1.0))
        low, high = STAIN_GAIN_RANGE
        gain = 1.0 if not stain or stain <= 0 else float(np.clip(spec.stain_level / stain, low, high))
        scaled = darkness * np.float32(gain)
        if not spec.invert:
            scaled = np.float32(1.0) - scaled
    normalized = (scaled - np.float32(spec.mean)) / np.float32(spec.std)
    return normalized.astype(np.float32, copy=False)[:, :, None], size


def preprocess_array(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """A decoded image array (any supported dtype/channels) -> HxWx1 model input."""
    return prepare_array(image, spec)[0]


def prepare_array(image: np.ndarray, spec: PreprocessSpec) -> tuple[np.ndarray, ChromosomeSize]:
    """A decoded image array -> (model input, chromosome size)."""
    return prepare_gray(to_gray(image, spec.max_pixels), spec)


def preprocess_bytes(data: bytes, spec: PreprocessSpec) -> np.ndarray:
    return preprocess_gray(decode_gray(data, spec.max_pixels), spec)


def preprocess_path(path: str | Path, spec: PreprocessSpec) -> np.ndarray:
    """A file -> HxWx1 model input; raises ImageError naming the file on any bad input."""
    return prepare_path(path, spec)[0]


def prepare_path(path: str | Path, spec: PreprocessSpec) -> tuple[np.ndarray, ChromosomeSize]:
    """A file -> (model input, chromosome size); raises ImageError naming the file on any bad input."""
    try:
        return prepare_gray(decode_gray(read_bytes(path), spec.max_pixels), spec)
    except ImageError as exc:
        message = str(exc)
        prefix = str(path)
        raise ImageError(message if message.startswith(prefix) else f"{prefix}: {message}") from None


def load_gray(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a file to float32 gray [0, 255] (for drawing karyograms and for augmentation)."""
    try:
        return decode_gray(read_bytes(path), max_pixels)
    except ImageError as exc:
        message = str(exc)
        raise ImageError(message if message.startswith(str(path)) else f"{path}: {message}") from None


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "decoder error"
