"""Cell context: how large each crop's chromosome is next to the other chromosomes of its cell.

Size is the first thing a cytogeneticist sorts by (the Denver groups A-G), and the one a crop
classifier cannot see: every crop is scaled to fill the model's input box, so a chromosome 21 and
a chromosome 1 arrive equally tall. What survives the scaling are resolution cues (an enlarged
small chromosome looks blurrier), and those differ between labs: measured here, a model trained on
one lab read the other's chromosomes as the wrong size (pki-dev -> pampaj7 67.8% of crops right).

Absolute size in pixels is not a usable feature either: it changes with the scanner, the objective
and how condensed the metaphase is. Size *relative to the cell* does not: each crop's length and
area divided by the median over its cell. Training fits, per class, a Gaussian over
(ln relative length, ln relative area) and stores it in the bundle (`SizePrior`). When crops come
as cells (`karyo karyotype`, `karyo evaluate` with cells), each crop's class probabilities are
multiplied by the size likelihood raised to `weight` and renormalized, before assembly.

`weight` is 0.5, not 1: the image already carries part of the size information (shape, band
count), so a full naive-Bayes product counts it twice. Measured on 5 case-wise folds and both
cross-lab directions (README) against 0, 0.3, 0.7, 1 and 1.5, 0.5 was the best or close to it
(within 0.1 points in-lab, 1.2 across labs; 1 and 1.5 were worse everywhere). A crop's size term
can move its log-probabilities by at most `weight * max_penalty` nats, so one mis-measured crop
(a blank, a clump) cannot be overruled by its size alone.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .labels import LabelScheme

FEATURES: tuple[str, ...] = ("ln_relative_length", "ln_relative_area")
MIN_CELL_CROPS = 10  # a median over fewer chromosomes says little about the cell's scale
MIN_CLASS_CROPS = 5  # classes with fewer measured crops get no size term (flat likelihood)
# An object with less than this share of its cell's median chromosome area is not a whole
# chromosome: the smallest, 21, measures about 0.34 of the median here (ln -1.08 +- 0.13 over both
# data sets; 22 0.39, Y 0.43), so the cut is a quarter of a 21. Of 20,322 crops of both labs one
# falls below it (0.04: a 6 x 9 px blank cut labelled "13"); the next smallest is at 0.17.
FRAGMENT_RELATIVE_AREA = 0.08
# Odds from which a crop is named as possibly holding a second chromosome, the one its cell's call
# misses (`SizePrior.joined_pair_log_odds`): 20:1, as `karyo audit` names labels. Measured with a
# fold-1 bundle (benchmarks/joined_pairs.py, two seeds): of the 29 real cells of both data sets it
# calls complete with 45 crops, one is named (its "19" looks like a 19 with something beside it);
# of held-out cells called one short because two of their crops were joined into one object, the
# joined crop is named in 243 of 292 side by side, 177 of 264 end to end, 83 of 291 crossed.
JOINED_PAIR_MIN_LOG_ODDS = float(np.log(20.0))


def relative_sizes(sizes: np.ndarray, cells: Sequence[str], min_cell_crops: int = MIN_CELL_CROPS) -> np.ndarray:
    """(N, 2) ln(size / median size of the crop's cell); NaN rows for unmeasured crops and small cells.

    `sizes` is (N, 2) length and area in source pixels, NaN where a crop could not be measured;
    `cells` names each crop's cell (crops of one metaphase share a name).
    """
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    if len(cells) != len(sizes):
        raise ValueError(f"{len(cells)} cell names for {len(sizes)} sizes")
    out = np.full(sizes.shape, np.nan)
    rows_of: dict[str, list[int]] = defaultdict(list)
    for row, cell in enumerate(cells):
        rows_of[cell].append(row)
    for rows in rows_of.values():
        block = sizes[rows]
        measured = np.isfinite(block).all(axis=1) & (block > 0).all(axis=1)
        if measured.sum() < min_cell_crops:
            continue
        median = np.median(block[measured], axis=0)
        index = np.asarray(rows)[measured]
        out[index] = np.log(block[measured] / median)
    return out


def fragment_mask(relative: np.ndarray, max_relative_area: float = FRAGMENT_RELATIVE_AREA) -> np.ndarray:
    """True for crops far too small to hold a whole chromosome of their cell (debris, a broken-off
    piece, an empty cut, or a small marker chromosome): such a crop must not fill a chromosome's
    slot in the count, and a person has to look at it. False where the size is unknown."""
    relative = np.asarray(relative, dtype=np.float64).reshape(-1, 2)
    with np.errstate(invalid="ignore"):
        return np.isfinite(relative[:, 1]) & (relative[:, 1] < np.log(max_relative_area))


@dataclass(frozen=True)
class SizePrior:
    """Per-class Gaussian over the relative-size features; serialized into the bundle manifest."""

    labels: tuple[str, ...]
    mean: np.ndarray  # (classes, 2)
    covariance: np.ndarray  # (classes, 2, 2)
    counts: tuple[int, ...]  # measured training crops per class
    weight: float = 0.5
    max_penalty: float = 12.0  # nats, before `weight`
    min_cell_crops: int = MIN_CELL_CROPS

    def __post_init__(self) -> None:
        k = len(self.labels)
        if self.mean.shape != (k, 2) or self.covariance.shape != (k, 2, 2) or len(self.counts) != k:
            raise ValueError(f"size prior shapes do not match its {k} labels")
        if not np.all(np.isfinite(self.mean)) or not np.all(np.isfinite(self.covariance)):
            raise ValueError("size prior holds non-finite values")
        if not self.weight >= 0 or not self.max_penalty > 0:
            raise ValueError("size prior weight must be >= 0 and max_penalty > 0")

    @classmethod
    def fit(
        cls, labels: Sequence[str], relative: np.ndarray, scheme: LabelScheme, weight: float = 0.5
    ) -> "SizePrior | None":
        """Fit from training crops (`relative` from :func:`relative_sizes`); None when no cell had sizes."""
        relative = np.asarray(relative, dtype=np.float64).reshape(-1, 2)
        names = np.asarray(labels)
        usable = np.isfinite(relative).all(axis=1)
        if not usable.any():
            return None
        k = len(scheme)
        mean, covariance, counts = np.zeros((k, 2)), np.zeros((k, 2, 2)), []
        for index, label in enumerate(scheme.labels):
            rows = relative[usable & (names == label)]
            counts.append(int(len(rows)))
            if len(rows) < MIN_CLASS_CROPS:  # flat: mean 0, a broad spread, flagged by its count
                covariance[index] = np.eye(2)
                continue
            mean[index] = rows.mean(axis=0)
            # floor the spread: a class measured on a few cells must not become a needle
            covariance[index] = np.cov(rows.T) + np.eye(2) * 0.05**2
        return cls(tuple(scheme.labels), mean, covariance, tuple(counts), weight=weight)

    def log_likelihood(self, relative: np.ndarray) -> np.ndarray:
        """(N, classes) log density of each crop's relative size under each class; 0 for NaN rows
        and for classes fitted on too few crops."""
        relative = np.asarray(relative, dtype=np.float64).reshape(-1, 2)
        known = np.isfinite(relative).all(axis=1)
        diff = np.where(known[:, None], relative, 0.0)[:, None, :] - self.mean[None]
        inverse = np.linalg.inv(self.covariance)
        _, logdet = np.linalg.slogdet(self.covariance)
        value = -0.5 * (np.einsum("nki,kij,nkj->nk", diff, inverse, diff) + logdet[None])
        value = np.maximum(value, value.max(axis=1, keepdims=True) - self.max_penalty)
        fitted = np.asarray(self.counts) >= MIN_CLASS_CROPS
        if fitted.any():  # unfitted classes sit at the fitted classes' median, i.e. neutral
            value[:, ~fitted] = np.median(value[:, fitted], axis=1, keepdims=True)
        value[~known] = 0.0
        return value

    def apply(self, probs: np.ndarray, relative: np.ndarray) -> np.ndarray:
        """Class probabilities with each crop's size evidence folded in; rows without a size unchanged."""
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape[1] != len(self.labels):
            raise ValueError(f"{probs.shape[1]} classes, size prior has {len(self.labels)}")
        scores = np.log(np.clip(probs, 1e-12, 1.0)) + self.weight * self.log_likelihood(relative)
        scores -= scores.max(axis=1, keepdims=True)
        out = np.exp(scores)
        out /= out.sum(axis=1, keepdims=True)
        known = np.isfinite(np.asarray(relative, dtype=np.float64).reshape(-1, 2)).all(axis=1)
        out[~known] = probs[~known]
        return out.astype(np.float32)

    def joined_pair_log_odds(self, relative: np.ndarray, own: np.ndarray, other: int) -> np.ndarray:
        """Per crop, ln odds that its object is the chromosome it was assigned (`own`, class indices)
        and a chromosome of class `other` together, against its own class alone; -inf where the
        size is unknown or either class has no fitted size.

        Why: two chromosomes touching or overlapping are cut as one object, counted once, and the
        cell then reads one chromosome short: a monosomy called where a person sees a pile-up.
        The crop's area then holds both chromosomes' areas; its length depends on how they lie
        (side by side, crossed, end to end), so only the area is weighed. The joined area's spread
        is the delta-method sum of the two classes' spreads of ln relative area.
        """
        relative = np.asarray(relative, dtype=np.float64).reshape(-1, 2)
        own = np.asarray(own, dtype=np.int64)
        area_mean, area_sd = self.mean[:, 1], np.sqrt(self.covariance[:, 1, 1])
        first, second = np.exp(area_mean[own]), np.exp(area_mean[other])
        share = first / (first + second)
        joined_mean = np.log(first + second)
        joined_sd = np.sqrt((share * area_sd[own]) ** 2 + ((1 - share) * area_sd[other]) ** 2)

        def log_density(x: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
            return -0.5 * ((x - mean) / sd) ** 2 - np.log(sd)

        with np.errstate(invalid="ignore"):
            odds = log_density(relative[:, 1], joined_mean, joined_sd) - log_density(relative[:, 1], area_mean[own], area_sd[own])
        fitted = np.asarray(self.counts) >= MIN_CLASS_CROPS
        usable = np.isfinite(relative).all(axis=1) & fitted[own] & bool(fitted[other])
        return np.where(usable, odds, -np.inf)

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(FEATURES),
            "labels": list(self.labels),
            "mean": np.round(self.mean, 6).tolist(),
            "covariance": np.round(self.covariance, 8).tolist(),
            "counts": list(self.counts),
            "weight": self.weight,
            "max_penalty": self.max_penalty,
            "min_cell_crops": self.min_cell_crops,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SizePrior":
        if list(data.get("features", [])) != list(FEATURES):
            raise ValueError(f"size prior features {data.get('features')!r}, this karyo knows {list(FEATURES)}")
        return cls(
            labels=tuple(str(x) for x in data["labels"]),
            mean=np.asarray(data["mean"], dtype=np.float64),
            covariance=np.asarray(data["covariance"], dtype=np.float64),
            counts=tuple(int(c) for c in data["counts"]),
            weight=float(data.get("weight", 0.5)),
            max_penalty=float(data.get("max_penalty", 12.0)),
            min_cell_crops=int(data.get("min_cell_crops", MIN_CELL_CROPS)),
        )


def sizes_array(sizes: Sequence[tuple[float, float] | None]) -> np.ndarray:
    """A list of measured sizes (None for unmeasured) as an (N, 2) float array with NaN rows."""
    out = np.full((len(sizes), 2), np.nan)
    for row, size in enumerate(sizes):
        if size is not None:
            out[row] = size
    return out


__all__ = ["FEATURES", "FRAGMENT_RELATIVE_AREA", "JOINED_PAIR_MIN_LOG_ODDS", "MIN_CELL_CROPS", "SizePrior", "fragment_mask", "relative_sizes", "sizes_array"]
