"""The hg19 band table the synthetic chromosomes are drawn from, and how it is regenerated.

The product reads `bands_hg19.json` (package data) and never the BED file, so a fresh install can
draw chromosomes with no data folder at all. The JSON holds facts from the UCSC hg19 cytoband
table (band names in order, relative positions, stain, centromere, length relative to chr1) plus
the one design choice made here: how dark each stain is drawn (`darkness`, 0 = pale, 1 = black).

Regenerate after editing the darkness mapping:

    python -m karyo.export.synth.bands ../shared/data/ideogram/cytobands_hg19.bed
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from karyo.runtime.labels import NORMAL24

TABLE_PATH = Path(__file__).with_name("bands_hg19.json")

# How dark a stain class looks in a G-banded preparation, 0 = unstained, 1 = darkest band.
STAIN_DARKNESS: dict[str, float] = {
    "gneg": 0.0,
    "gpos25": 0.3,
    "gpos50": 0.55,
    "gpos75": 0.8,
    "gpos100": 1.0,
    "acen": 0.3,  # the primary constriction reads as a pale, narrow waist
    "gvar": 0.75,  # variable heterochromatin; see the per-band exceptions below
    "stalk": 0.15,  # satellite stalks of acrocentrics: thin and pale
}

# Heterochromatin that does not follow the gvar default in G-banding: 9q12 (9qh) stains pale,
# which is what makes inv(9)(p12q13) visible; acrocentric short arms are mid-gray.
_DARKNESS_EXCEPTIONS: dict[tuple[str, str], float] = {("9", "q12"): 0.2}
_ACROCENTRIC_P_GVAR = 0.5


@dataclass(frozen=True)
class ChromosomeBands:
    """One chromosome's bands, positions in Mb from pter (so lengths compare across chromosomes)."""

    name: str
    band_names: tuple[str, ...]
    edges: np.ndarray  # (n+1,) Mb, strictly increasing, edges[0] == 0
    darkness: np.ndarray  # (n,) 0..1
    stains: tuple[str, ...]
    centromere: float  # Mb from pter
    relative_length: float  # versus chromosome 1

    @property
    def length(self) -> float:
        return float(self.edges[-1])

    def band_span(self, prefix: str, skip_acen: bool = True) -> tuple[float, float]:
        """Start and end (Mb) of every band named by `prefix`: "p14" covers p14.3..p14.1, "p22.1"
        covers p22.13..p22.11. Centromeric (acen) bands are left out unless asked for."""
        hits = [i for i, name in enumerate(self.band_names)
                if _names_band(prefix, name) and not (skip_acen and self.stains[i] == "acen")]
        if not hits:
            raise KeyError(f"chromosome {self.name} has no band {prefix}")
        return float(self.edges[min(hits)]), float(self.edges[max(hits) + 1])


def _names_band(prefix: str, name: str) -> bool:
    if name == prefix:
        return True
    if not name.startswith(prefix):
        return False
    following = name[len(prefix)]
    return following == "." or ("." in prefix and following.isdigit())


def band_darkness(chromosome: str, band: str, stain: str) -> float:
    if (chromosome, band) in _DARKNESS_EXCEPTIONS:
        return _DARKNESS_EXCEPTIONS[(chromosome, band)]
    if stain == "gvar" and band.startswith("p") and chromosome in ("13", "14", "15", "21", "22"):
        return _ACROCENTRIC_P_GVAR
    if stain not in STAIN_DARKNESS:
        raise ValueError(f"unknown stain {stain!r} on {chromosome}{band}")
    return STAIN_DARKNESS[stain]


def build_band_table(bed_path: str | Path) -> dict:
    """Read a UCSC cytoband BED (chrom start end band stain) into the JSON structure the product ships."""
    rows: dict[str, list[tuple[int, int, str, str]]] = {}
    for number, line in enumerate(Path(bed_path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith(("#", "track")):
            continue
        parts = line.split("\t")
        if len(parts) < 5:
            raise ValueError(f"{bed_path}:{number}: expected 5 tab-separated columns")
        chrom = parts[0].removeprefix("chr")
        if chrom in NORMAL24:
            rows.setdefault(chrom, []).append((int(parts[1]), int(parts[2]), parts[3], parts[4]))
    missing = [c for c in NORMAL24 if c not in rows]
    if missing:
        raise ValueError(f"{bed_path}: no bands for chromosome(s) {', '.join(missing)}")
    chr1_length = max(end for _, end, _, _ in rows["1"])
    chromosomes = {}
    for chrom in NORMAL24:
        bands = sorted(rows[chrom])
        length = bands[-1][1]
        acen = [b for b in bands if b[3] == "acen"]
        centromere = next((s for s, _, name, _ in acen if name.startswith("q")), None)
        if centromere is None:
            raise ValueError(f"{bed_path}: chromosome {chrom} has no q-side acen band")
        chromosomes[chrom] = {
            "length_bp": length,
            "relative_length": round(length / chr1_length, 6),
            "centromere": round(centromere / length, 6),
            "bands": [
                {"name": name, "start": round(s / length, 6), "end": round(e / length, 6),
                 "stain": stain, "darkness": band_darkness(chrom, name, stain)}
                for s, e, name, stain in bands
            ],
        }
    return {
        "source": "UCSC hg19 cytoBand (chrom start end band stain); positions relative to chromosome length",
        "assembly": "hg19",
        "stain_darkness": STAIN_DARKNESS,
        "chromosomes": chromosomes,
    }


def write_band_table(bed_path: str | Path, out_path: str | Path = TABLE_PATH) -> Path:
    table = build_band_table(bed_path)
    out_path = Path(out_path)
    temp = out_path.with_name(f".{out_path.name}.tmp")
    temp.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    temp.replace(out_path)
    return out_path


@lru_cache(maxsize=1)
def load_band_table() -> dict[str, ChromosomeBands]:
    """The shipped table as arrays, keyed by chromosome name ("1".."22", "X", "Y")."""
    data = json.loads(TABLE_PATH.read_text(encoding="utf-8"))
    chr1_mb = data["chromosomes"]["1"]["length_bp"] / 1e6
    table: dict[str, ChromosomeBands] = {}
    for name, entry in data["chromosomes"].items():
        mb = entry["length_bp"] / 1e6
        bands = entry["bands"]
        edges = np.array([b["start"] for b in bands] + [bands[-1]["end"]], dtype=np.float64) * mb
        table[name] = ChromosomeBands(
            name=name,
            band_names=tuple(b["name"] for b in bands),
            edges=edges,
            darkness=np.array([b["darkness"] for b in bands], dtype=np.float32),
            stains=tuple(b["stain"] for b in bands),
            centromere=entry["centromere"] * mb,
            relative_length=mb / chr1_mb,
        )
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Regenerate bands_hg19.json from a UCSC cytoband BED file.")
    parser.add_argument("bed", type=Path, help="cytobands_hg19.bed (chrom start end band stain)")
    parser.add_argument("--out", type=Path, default=TABLE_PATH, help="where to write the JSON (default: the package copy)")
    args = parser.parse_args(argv)
    path = write_band_table(args.bed, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
