"""Synthetic G-banded chromosomes drawn from the hg19 band table.

`render_cell("47,XY,+21", seed=0)` draws one metaphase as (label, crop) pairs;
`generate_dataset(out, cells, scheme)` writes a labeled folder with a manifest, like real data.
"""

from .dataset import generate_dataset, render_cell
from .karyotype import KaryotypeError, parse_karyotype

__all__ = ["generate_dataset", "render_cell", "parse_karyotype", "KaryotypeError"]
