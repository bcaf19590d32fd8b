"""Draw one G-banded chromosome from its band profile, the way a karyotyping scanner crops it.

Everything is evaluated in closed form on the crop's pixel grid (numpy + two OpenCV blurs), so a
crop costs about a millisecond: each pixel is mapped back onto the chromosome's own axis (through a
rotation and a constant-curvature bend, exact for a circular arc) and reads a 1-D lookup of band
darkness and chromatid width. Two chromatids are drawn as projected cylinders that meet at the
centromere, with rounded ends and thin satellite stalks.

Variation comes in two layers, as in real data: a :class:`CellStyle` per metaphase (condensation,
width, stain contrast, blur, noise, how straight the crops are) and per-chromosome jitter.
`size` is the nominal height in pixels of chromosome 1; at 100 the crops match scanner crops
(about 20-30 px wide, 20-130 px tall), at 300 they suit a 300 px model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .variants import BandProfile

CHR1_MB = 249.250621  # hg19 chromosome 1, the length scale every chromosome is drawn against
WHITE = 255.0


@dataclass(frozen=True)
class CellStyle:
    """What one metaphase spread shares: all its chromosomes were condensed, stained and imaged together."""

    scale: float  # size / 100: every pixel measure below is multiplied by it
    chr1_px: float  # drawn length of chromosome 1
    width_px: float  # full width of chromosome 1
    light: float  # gray of an unstained (gneg) band
    dark: float  # gray of the darkest (gpos100) band
    band_sigma: float  # band resolution (px): fine sub-bands merge, as at ~400-550 band level
    blur_sigma: float  # optics
    noise: float  # gray levels of pixel noise inside the chromosome
    texture: float  # strength of blotchy, chromatin-like stain variation
    pinch: float  # depth of the centromere constriction (0 none, 1 full)
    splay: float  # how far sister chromatids part towards the telomeres
    groove: float  # 0: chromatids fused; 1: a pale line between them
    tilt_deg: float  # spread of small rotations (straightened crops: ~2 degrees)
    bend: float  # spread of total bend angle (radians)
    margin_px: int  # white border around the tight crop


def sample_cell_style(rng: np.random.Generator, size: int = 100) -> CellStyle:
    scale = size / 100.0
    straightened = rng.random() < 0.6
    light = rng.uniform(95.0, 200.0)
    dark = rng.uniform(0.0, min(65.0, light - 80.0))
    return CellStyle(
        scale=scale,
        chr1_px=size * rng.uniform(0.8, 1.2),
        width_px=size * rng.uniform(0.15, 0.215),
        light=light,
        dark=dark,
        band_sigma=scale * rng.uniform(0.7, 1.4),
        blur_sigma=scale * rng.uniform(0.4, 0.85),
        noise=rng.uniform(2.0, 8.0),
        texture=rng.uniform(0.06, 0.3),
        pinch=rng.uniform(0.25, 0.6),
        splay=rng.uniform(0.0, 1.0),
        groove=rng.uniform(0.2, 1.0),
        tilt_deg=2.0 if straightened else 7.0,
        bend=0.12 if straightened else 0.45,
        margin_px=max(1, int(round(rng.uniform(1.0, 3.5) * scale))),
    )


def _gaussian_smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.3:
        return values
    radius = int(math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(values, radius, mode="edge")
    return np.convolve(padded, kernel, mode="valid").astype(np.float32)


def _axis_lookups(profile: BandProfile, length: float, half_width: float, style: CellStyle,
                  rng: np.random.Generator, step: float) -> tuple[np.ndarray, ...]:
    """Darkness, chromatid radius and chromatid offset sampled along the axis (s = 0 at pter)."""
    s = np.arange(-half_width, length + half_width + step, step, dtype=np.float32)
    mb = s / length * profile.length
    index = np.clip(np.searchsorted(profile.edges, mb, side="right") - 1, 0, len(profile.darkness) - 1)
    darkness = profile.darkness[index] * rng.uniform(0.85, 1.15, size=len(profile.darkness)).astype(np.float32)[index]
    darkness = _gaussian_smooth(np.clip(darkness, 0.0, 1.0), style.band_sigma / step)

    radius = np.full_like(s, half_width * 0.5 * 1.08)
    stalk = _gaussian_smooth(profile.stalk[index].astype(np.float32), 0.8 * style.scale / step)
    radius *= 1.0 - 0.6 * stalk
    cen = profile.centromere / profile.length * length
    waist = np.exp(-0.5 * ((s - cen) / (0.28 * half_width + 0.5)) ** 2)
    radius *= 1.0 - style.pinch * waist
    # rounded telomeres: the radius falls along a quarter circle over the last chromatid radius
    cap = half_width * 0.55
    to_end = np.minimum(s, length - s)
    rounding = np.sqrt(np.clip(1.0 - np.clip((cap - to_end) / cap, 0.0, None) ** 2, 0.0, 1.0))
    radius *= np.where(to_end > 0, rounding, 0.0)

    # sister chromatids part towards the telomeres; visibly so only on short chromosomes (X shapes)
    parting = style.splay * min(1.0, max(0.15, 1.4 - 2.0 * profile.length / CHR1_MB))
    parting *= np.tanh(np.abs(s - cen) / (2.0 * half_width))
    offset = half_width * 0.5 * (0.75 + 0.25 * style.groove + 0.6 * parting) * (1.0 - 0.8 * style.pinch * waist)
    return s, darkness, radius.astype(np.float32), offset.astype(np.float32)


def render_chromosome(profile: BandProfile, style: CellStyle, rng: np.random.Generator) -> np.ndarray:
    """One tight, dark-on-white uint8 crop of the chromosome described by `profile`, p-arm up."""
    relative = profile.length / CHR1_MB
    length = style.chr1_px * (0.08 + 0.92 * relative) * rng.normal(1.0, 0.04)
    width = style.width_px * (0.65 + 0.35 * relative) * rng.normal(1.0, 0.05)
    half_width = width / 2.0
    step = 0.5 * style.scale
    s_grid, dark_grid, radius_grid, offset_grid = _axis_lookups(profile, length, half_width, style, rng, step)

    tilt = math.radians(rng.normal(0.0, style.tilt_deg))
    bend = rng.normal(0.0, style.bend) * (0.5 + relative)
    if relative > 0.5 and rng.random() < 0.08:  # now and then a long one lies strongly bent (C/V shapes)
        bend = rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.8)
    sag = abs(bend) * length / 8.0
    pad = 4.0 * style.scale + 3 * style.blur_sigma
    height = int(math.ceil(length * abs(math.cos(tilt)) + width * abs(math.sin(tilt)) + width + 2 * sag + 2 * pad))
    breadth = int(math.ceil(length * abs(math.sin(tilt)) + width + 2 * sag + 2 * pad))
    yy, xx = np.mgrid[0:height, 0:breadth].astype(np.float32)
    x0, y0 = xx - (breadth - 1) / 2.0, yy - (height - 1) / 2.0
    x = math.cos(tilt) * x0 + math.sin(tilt) * y0
    y = -math.sin(tilt) * x0 + math.cos(tilt) * y0

    curvature = bend / max(length, 1.0)
    if abs(curvature) > 1e-5:  # exact polar inverse of a circular arc centred at (R, 0)
        sign = 1.0 if curvature > 0 else -1.0
        r0 = 1.0 / abs(curvature)
        dx = sign * x - r0
        along = np.arctan2(y, -dx) * r0
        across = r0 - np.hypot(dx, y)
    else:
        along, across = y, x
    s = along + length / 2.0
    across = across + rng.uniform(0.0, 0.6) * style.scale * np.sin(s * (2 * math.pi / max(12.0, 0.3 * length)) + rng.uniform(0, 6.3))

    darkness = np.interp(s, s_grid, dark_grid).astype(np.float32)
    radius = np.interp(s, s_grid, radius_grid, left=0.0, right=0.0).astype(np.float32)
    offset = np.interp(s, s_grid, offset_grid).astype(np.float32)
    inv_radius = 1.0 / np.maximum(radius, 1e-3)
    left = np.sqrt(np.clip(1.0 - ((across - offset) * inv_radius) ** 2, 0.0, 1.0))
    right = np.sqrt(np.clip(1.0 - ((across + offset) * inv_radius) ** 2, 0.0, 1.0))
    body = np.where(radius > 0.25 * style.scale, np.clip(left + right, 0.0, 1.0) ** 0.35, 0.0).astype(np.float32)

    # sister chromatids stain a little differently along their length
    sister = np.interp(s, s_grid, _smooth_noise(rng, (2, len(s_grid)), cell=4.0 / 0.5)[0]).astype(np.float32)
    side = (left - right) / np.maximum(left + right, 1e-3)
    darkness = darkness * (1.0 + 0.35 * style.texture / 0.3 * side * sister)
    texture = _smooth_noise(rng, (height, breadth), cell=3.5 * style.scale) * style.texture
    stain = np.clip(darkness + texture * (0.4 + darkness), 0.0, 1.0)
    light = style.light + rng.normal(0.0, 8.0)
    density = body * ((WHITE - light) + (light - style.dark) * stain)
    density = cv2.GaussianBlur(density, (0, 0), style.blur_sigma)
    coverage = cv2.GaussianBlur(body, (0, 0), style.blur_sigma)
    grain = _smooth_noise(rng, (height, breadth), cell=max(1.0, 0.8 * style.scale)) * style.noise
    image = WHITE - density - grain * np.clip(coverage * 3.0, 0.0, 1.0)
    return _tight_crop(np.clip(image, 0.0, WHITE), coverage, style.margin_px)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Unit-variance noise correlated over about `cell` pixels (plain white noise when cell <= 1)."""
    if cell <= 1.0:
        return rng.standard_normal(shape).astype(np.float32)
    small = (max(2, int(shape[0] / cell) + 2), max(2, int(shape[1] / cell) + 2))
    coarse = rng.standard_normal(small).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _tight_crop(image: np.ndarray, coverage: np.ndarray, margin: int) -> np.ndarray:
    """Cut to the chromosome plus a white margin, like the scanner's segmentation crops."""
    inked = WHITE - image > 6.0
    rows = np.flatnonzero(inked.any(axis=1))
    cols = np.flatnonzero(inked.any(axis=0))
    if len(rows) == 0:
        rows = cols = np.array([0])
    top, bottom = rows[0], rows[-1] + 1
    left, right = cols[0], cols[-1] + 1
    crop = image[top:bottom, left:right]
    crop = np.pad(crop, margin, mode="constant", constant_values=WHITE)
    crop = np.where(np.pad(coverage[top:bottom, left:right], margin) > 0.01, crop, WHITE)
    return np.rint(crop).astype(np.uint8)
