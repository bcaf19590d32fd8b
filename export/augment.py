"""Augmentation for preprocessed chromosome crops, in numpy/OpenCV so it runs fast on two cores.

What varies between labs and metaphases, and what the model should not care about: a few degrees
of tilt, chromosome length and shape (condensation, see `Augmenter._condense`), a gentle bend,
staining contrast and gamma, focus, noise, the scanner's resolution, and the left-right mirror
image (a chromosome seen from the other side). Resolution matters more than it looks: every crop is scaled to fill the input box,
so a small chromosome or a low-resolution scanner both show up as a blurrier image, and a model
trained on one lab learns "blurry = small" (see `karyo.runtime.cell_size` for the measurements).
What it should care about: which end is up. Straightened crops put the p arm on top, and the short arm is a cue for
the class, so vertical flips are off by default; turn them on (`vflip`) for labs whose crops
come in any orientation. A piece of a neighbour at the box's edge, as crops cut as bounding boxes
keep after focusing, is there on request (`neighbour_probability`), off by default.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from karyo.runtime.paper import background_level
from karyo.runtime.preprocess import PreprocessSpec


# How far condensation may change a chromosome's length-to-width ratio, either way (see
# `Augmenter._condense`); the default of both the config and `karyo-export train --condensation`.
DEFAULT_CONDENSATION = 0.3
# How often a training crop gets a neighbour's piece at its edge; the default of both the config
# and `karyo-export train --neighbours`. Off: at 0.15, two folds read the pieces focusing leaves
# better (77 -> 87% and 77 -> 81% of those crops), but crowded crops as a whole moved +0.5 and
# -0.2 points and assembly -0.04 and -0.13 (benchmarks/ACCURACY.md): no gain a default should
# carry.
DEFAULT_NEIGHBOUR_PROBABILITY = 0.0


@dataclass(frozen=True)
class AugmentConfig:
    rotation_deg: float = 8.0
    scale: float = 0.08  # relative size change, +-
    # length-to-width ratio times a factor log-uniform in 1/(1+a)..1+a, refitted to the box as the
    # preprocessing would (condensation: cells and labs differ, see `Augmenter._condense`)
    condensation: float = DEFAULT_CONDENSATION
    shift: float = 0.04  # fraction of the side, +-
    bend: float = 0.04  # bow of the long axis, fraction of the side, +-
    contrast: float = 0.15  # multiplicative, +-
    brightness: float = 0.04  # additive on the [0, 1] scale, +-
    blur_probability: float = 0.2
    noise_std: float = 0.02
    gamma: float = 0.25  # exponent between 1/(1+g) and 1+g on the foreground's darkness
    resolution_probability: float = 0.5
    min_resolution: float = 0.5  # down to this fraction of the input's pixels per side, then back up
    # a piece of another chromosome of the batch laid in through the box's edge, reaching up to
    # `neighbour_depth` of the side in (crops cut as bounding boxes, see `Augmenter._lay_in_neighbour`)
    neighbour_probability: float = DEFAULT_NEIGHBOUR_PROBABILITY
    neighbour_depth: float = 0.3
    hflip: bool = True
    vflip: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AugmentConfig":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class Augmenter:
    """Random geometric and photometric changes applied to a batch of HxWx1 tensors.

    Works on the unit scale (`scaled` before mean/std normalization) so the background value is
    known: 0 for inverted crops, 1 otherwise; warps fill with it, like the runtime's padding.
    """

    def __init__(self, spec: PreprocessSpec, config: AugmentConfig | None = None, seed: int = 0) -> None:
        self.spec = spec
        self.config = config or AugmentConfig()
        self.rng = np.random.default_rng(seed)
        height, width = spec.size, spec.width
        grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
        self._grid = np.stack([grid_x, grid_y, np.ones_like(grid_x)], axis=-1)  # height x width x 3
        self._bow = 1.0 - ((2.0 * grid_y / max(height - 1, 1)) - 1.0) ** 2  # 0 at the ends, 1 in the middle
        self.background = 0.0 if spec.invert else 1.0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = np.empty(batch.shape, dtype=np.float32)
        c, rng = self.config, self.rng
        for i in range(len(batch)):
            neighbour = None
            if len(batch) > 1 and c.neighbour_probability > 0 and rng.random() < c.neighbour_probability:
                j = int(rng.integers(len(batch) - 1))
                neighbour = batch[j + (j >= i), :, :, 0].astype(np.float32)
            out[i, :, :, 0] = self.one(batch[i, :, :, 0].astype(np.float32), neighbour)
        return out

    def one(self, image: np.ndarray, neighbour: np.ndarray | None = None) -> np.ndarray:
        """One augmented crop; `neighbour` (another preprocessed crop) lends a piece at the edge."""
        c, rng, spec = self.config, self.rng, self.spec
        unit = image * np.float32(spec.std) + np.float32(spec.mean)
        unit = self._warp(unit, self._condense(unit))
        if neighbour is not None:
            unit = self._lay_in_neighbour(unit, neighbour * np.float32(spec.std) + np.float32(spec.mean))
        if c.hflip and rng.random() < 0.5:
            unit = unit[:, ::-1]
        if c.vflip and rng.random() < 0.5:
            unit = unit[::-1, :]
        if c.resolution_probability > 0 and rng.random() < c.resolution_probability:
            unit = self._coarsen(unit, float(rng.uniform(c.min_resolution, 1.0)))
        foreground = unit - self.background
        if c.gamma > 0:  # darkness in [0, 1] (0 = background) through a random power: band contrast shifts
            exponent = float(np.exp(rng.uniform(-1.0, 1.0) * np.log1p(c.gamma)))
            magnitude = np.clip(np.abs(foreground), 0.0, 1.0) ** np.float32(exponent)
            foreground = np.sign(foreground) * magnitude
        foreground *= np.float32(1.0 + rng.uniform(-c.contrast, c.contrast))
        unit = foreground + np.float32(self.background + rng.uniform(-c.brightness, c.brightness))
        if rng.random() < c.blur_probability:
            unit = cv2.GaussianBlur(unit, (0, 0), sigmaX=float(rng.uniform(0.4, 1.0)))
        if c.noise_std > 0:
            unit = unit + rng.normal(0.0, c.noise_std, unit.shape).astype(np.float32)
        unit = np.clip(unit, -0.1, 1.1)
        return ((unit - np.float32(spec.mean)) / np.float32(spec.std)).astype(np.float32)

    def _lay_in_neighbour(self, unit: np.ndarray, other: np.ndarray) -> np.ndarray:
        """`unit` with a strip of `other`'s chromosome entering through one edge of the box.

        What focusing leaves of a neighbour in a crop cut as a bounding box: blanking removes
        neighbours that stay separate objects and the centred cut most of one merged with the
        chromosome, but about 1 in 5 merged neighbours keeps a piece beside it
        (benchmarks/ACCURACY.md, Where the goals stand). A network trained only on clean crops reads
        such a piece as part of the chromosome. The strip is cut through the middle of the other
        chromosome (where it is widest), `neighbour_depth` of the side deep at most, moved along the
        edge at random, and laid over the crop as the darker of the two, like overlapping
        chromosomes on a slide.
        """
        c, rng = self.config, self.rng
        sign = np.float32(1.0 if self.spec.invert else -1.0)  # darkness is unit - background, signed
        piece = np.clip(sign * (other - np.float32(self.background)), 0.0, None)
        along_columns = rng.random() < 0.8  # boxes are tall: most room beside the chromosome
        if not along_columns:
            unit, piece = unit.T, piece.T
        height, width = unit.shape
        cols = np.flatnonzero(piece.max(axis=0) > 0.05)
        if cols.size == 0:
            return unit if along_columns else unit.T
        depth = max(2, int(round(rng.uniform(0.1, c.neighbour_depth) * width)))
        start = int(np.clip((cols[0] + cols[-1]) // 2 - depth // 2, 0, max(0, width - depth)))
        strip = piece[:, start : start + depth]
        shift = int(rng.integers(-height // 2, height // 2 + 1))  # rows of the strip that leave the box are lost
        laid = np.zeros_like(piece)
        target = slice(0, strip.shape[1]) if rng.random() < 0.5 else slice(width - strip.shape[1], width)
        laid[max(0, shift) : height + min(0, shift), target] = strip[max(0, -shift) : height - max(0, shift)]
        darkness = np.maximum(sign * (unit - np.float32(self.background)), laid)
        out = np.float32(self.background) + sign * darkness
        return out if along_columns else np.ascontiguousarray(out.T)

    @staticmethod
    def _coarsen(unit: np.ndarray, fraction: float) -> np.ndarray:
        """The same crop as a scanner with `fraction` of the resolution would have delivered it."""
        height, width = unit.shape
        small = cv2.resize(unit, (max(2, round(width * fraction)), max(2, round(height * fraction))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)

    def _condense(self, unit: np.ndarray) -> tuple[float, float, float, float] | None:
        """How a more or less condensed chromosome would fill the box: (sx, sy, tx, ty), forward.

        A chromosome's length-to-width ratio is a cue for its class, but it is not fixed: measured
        per cell against each class's median, it spans 0.75 to 1.29 (5th to 95th percentile of
        pki-dev's cells), and pampaj7's chromosomes are 0.8 times as elongated as pki-dev's, class
        for class. A network that learned pki-dev's ratios reads pampaj7's 18s as Ys and its 16s as
        19s. The object's length-to-width ratio is scaled by a random factor and the result is
        scaled back to fill the box the way the preprocessing fills it (the side that touched the
        box still does), so the change is one of shape, not of size. None: no change.
        """
        c, rng = self.config, self.rng
        if c.condensation <= 0:
            return None
        factor = float(np.exp(rng.uniform(-1.0, 1.0) * np.log1p(c.condensation)))
        # the padding's level, read off the border: exactly the background with the staining step
        # on, the slide's own paper level (not 0) without it
        foreground = np.abs(unit - np.float32(background_level(unit))) > 0.05
        rows, cols = np.flatnonzero(foreground.any(axis=1)), np.flatnonzero(foreground.any(axis=0))
        if rows.size < 2 or cols.size < 2:
            return None
        height, width = unit.shape
        object_h, object_w = float(rows[-1] - rows[0] + 1), float(cols[-1] - cols[0] + 1)
        root = math.sqrt(factor)
        fill = max(object_h / height, object_w / width)
        refit = fill / max(object_h * root / height, object_w / root / width)
        sx, sy = refit / root, refit * root
        centre_x, centre_y = (cols[0] + cols[-1]) / 2.0, (rows[0] + rows[-1]) / 2.0
        return sx, sy, (width - 1) / 2.0 - sx * centre_x, (height - 1) / 2.0 - sy * centre_y

    def _warp(self, unit: np.ndarray, condense: tuple[float, float, float, float] | None = None) -> np.ndarray:
        """Condensation, rotation, scale, shift and a bow along the vertical axis, as one remap.

        Shifts and the bow are fractions of the box's own side in each direction; pixels stay
        square (rotation in pixel units) but for `condense`, which models a chromosome of another
        shape, not a stretched image of this one.
        """
        c, rng = self.config, self.rng
        height, width = unit.shape
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        angle = math.radians(rng.uniform(-c.rotation_deg, c.rotation_deg))
        scale = 1.0 + rng.uniform(-c.scale, c.scale)
        tx, ty = rng.uniform(-c.shift, c.shift, 2) * np.array([width, height])
        # inverse map: output pixel -> source pixel
        cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
        inverse = np.array(
            [
                [cos, sin, cx - cos * (cx + tx) - sin * (cy + ty)],
                [-sin, cos, cy + sin * (cx + tx) - cos * (cy + ty)],
            ],
            dtype=np.float32,
        )
        coords = self._grid @ inverse.T  # height x width x 2
        map_x = coords[..., 0] + np.float32(rng.uniform(-c.bend, c.bend) * width) * self._bow
        map_y = coords[..., 1]
        if condense is not None:  # the condensed chromosome is what the warp sees: invert its map last
            sx, sy, cx_shift, cy_shift = condense
            map_x = (map_x - np.float32(cx_shift)) / np.float32(sx)
            map_y = (map_y - np.float32(cy_shift)) / np.float32(sy)
        return cv2.remap(
            unit,
            map_x.astype(np.float32),
            map_y.astype(np.float32),
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=float(self.background),
        )
