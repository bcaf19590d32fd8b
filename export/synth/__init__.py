"""Synthetic G-banded chromosomes drawn from the hg19 band table."""
