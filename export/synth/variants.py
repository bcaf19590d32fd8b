"""Structural variants as edits of a chromosome's band sequence.

A drawn chromosome is a list of *pieces* of the reference chromosome (Mb intervals, a piece with
start > end runs backwards) plus where its centromere falls. Deletions drop pieces, duplications
repeat them, inversions reverse them, isochromosomes mirror an arm: exactly how the cytogenetic
rearrangement reorders the bands, so the drawn band profile changes the way a real one does.
Breakpoints fall inside the named band at a jittered position, since real breakpoints vary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from karyo.runtime.labels import STRUCTURAL

from .bands import ChromosomeBands

ACROCENTRIC = ("13", "14", "15", "21", "22")


@dataclass(frozen=True)
class BandProfile:
    """The band sequence to draw, pter (index 0) to qter, in Mb along the drawn chromosome."""

    edges: np.ndarray  # (n+1,) increasing from 0
    darkness: np.ndarray  # (n,)
    stalk: np.ndarray  # (n,) bool: satellite stalk (drawn thin)
    centromere: float  # Mb from the top

    @property
    def length(self) -> float:
        return float(self.edges[-1])


def vary_heterochromatin(bands: ChromosomeBands, rng: np.random.Generator) -> ChromosomeBands:
    """Rescale heterochromatin and acrocentric short arms: their size varies between people, and the
    unsequenced acrocentric p-arms are drawn far longer in the assembly than they look under the scope."""
    lengths = np.diff(bands.edges)
    stains = np.array(bands.stains)
    short_arm = np.array([name.startswith("p") for name in bands.band_names])
    acrocentric_p = short_arm & np.isin(stains, ("gvar", "stalk")) & (bands.name in ACROCENTRIC)
    other_heterochromatin = (stains == "gvar") & ~acrocentric_p
    scale = np.ones_like(lengths)
    scale[acrocentric_p] = 0.45 * rng.uniform(0.6, 1.3)
    scale[other_heterochromatin] = rng.uniform(0.6, 1.2)
    edges = np.concatenate([[0.0], np.cumsum(lengths * scale)])
    centromere_index = int(np.searchsorted(bands.edges, bands.centromere - 1e-6))
    return ChromosomeBands(bands.name, bands.band_names, edges, bands.darkness, bands.stains,
                           float(edges[centromere_index]), bands.relative_length)


def _breakpoint(bands: ChromosomeBands, band: str, rng: np.random.Generator) -> float:
    """A point inside `band` (all its sub-bands), away from its ends."""
    start, end = bands.band_span(band)
    return float(start + (end - start) * rng.uniform(0.3, 0.7))


def variant_pieces(label: str, bands: ChromosomeBands, rng: np.random.Generator) -> tuple[list[tuple[float, float]], float]:
    """Pieces (Mb of the reference, start > end = reversed) and the centromere (Mb from the top)."""
    length, cen = bands.length, bands.centromere
    if label == "del(5)(p14)":  # terminal deletion, p14 -> pter lost (cri-du-chat)
        cut = _breakpoint(bands, "p14", rng)
        return [(cut, length)], cen - cut
    if label == "del(18)(p11)":  # terminal deletion inside 18p11.2: nearly the whole short arm lost
        cut = _breakpoint(bands, "p11.2", rng)
        return [(cut, length)], cen - cut
    if label == "inv(9)(p12q13)":  # pericentric inversion: 9qh heterochromatin moves to the short arm
        a = _breakpoint(bands, "p12", rng)
        b = _breakpoint(bands, "q13", rng)
        return [(0.0, a), (b, a), (b, length)], a + (b - cen)
    if label in ("i(18)(q10)", "i(X)(q10)"):  # isochromosome: two long arms mirrored at the centromere
        return [(length, cen), (cen, length)], length - cen
    if label == "dup(X)(p22)":  # tandem duplication of Xp22.2 -> p22.1
        a, _ = bands.band_span("p22.2")
        _, b = bands.band_span("p22.11")
        return [(0.0, b), (a, length)], cen + (b - a)
    if label == "dup(X)(q21)":  # tandem duplication of Xq21
        a, b = bands.band_span("q21")
        return [(0.0, b), (a, length)], cen
    if label == "del(X)(q22)":  # terminal deletion, q22 -> qter lost
        cut = _breakpoint(bands, "q22", rng)
        return [(0.0, cut)], cen
    if label in STRUCTURAL:
        raise NotImplementedError(f"no drawing rule for {label}")
    return [(0.0, length)], cen


def _slice(bands: ChromosomeBands, start: float, end: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Band lengths, darkness and stalk flags of the reference between start and end (either direction)."""
    lo, hi = min(start, end), max(start, end)
    edges = np.clip(bands.edges, lo, hi)
    lengths = np.diff(edges)
    keep = lengths > 1e-9
    darkness = bands.darkness[keep]
    stalk = np.array([s == "stalk" for s in bands.stains])[keep]
    lengths = lengths[keep]
    if start > end:
        lengths, darkness, stalk = lengths[::-1], darkness[::-1], stalk[::-1]
    return lengths, darkness, stalk


def band_profile(label: str, bands: ChromosomeBands, rng: np.random.Generator) -> BandProfile:
    """The band sequence to draw for a label (a normal chromosome or a structural variant of it)."""
    bands = vary_heterochromatin(bands, rng)
    pieces, centromere = variant_pieces(label, bands, rng)
    parts = [_slice(bands, start, end) for start, end in pieces]
    lengths = np.concatenate([p[0] for p in parts])
    edges = np.concatenate([[0.0], np.cumsum(lengths)])
    return BandProfile(edges, np.concatenate([p[1] for p in parts]).astype(np.float32),
                       np.concatenate([p[2] for p in parts]), float(centromere))
