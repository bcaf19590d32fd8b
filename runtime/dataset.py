"""Read a labeled image tree: folder-per-class at any depth, or a `manifest.csv` when present.

The class of an image is the nearest parent folder whose name parses as a label, so
`<case>.<cell>.tiff/clase7/x.tiff`, `07/x.png` and `chr_x/x.bmp` all work. Case and cell come
from the manifest when there is one; without it, each top-level folder that is not itself a
class is taken as the case (so a split by case still never mixes one patient's folders).
"""

from __future__ import annotations

import csv
import functools
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .labels import parse_label as _parse_label
from .preprocess import IMAGE_SUFFIXES

UNKNOWN = "unknown"  # case or cell the data did not give


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    case: str
    cell: str

    @property
    def has_cell(self) -> bool:
        """Whether the data said which metaphase this crop came from (else cell is UNKNOWN)."""
        return self.cell != UNKNOWN

    @property
    def cell_key(self) -> str:
        """One metaphase: case and cell together (cell ids repeat across cases)."""
        return f"{self.case}/{self.cell}"


MANIFEST_NAME = "manifest.csv"

# Folder names repeat across thousands of crops (`clase7`, case folders): parse each name once.
parse_label = functools.lru_cache(maxsize=65536)(_parse_label)


def iter_images(root: Path) -> Iterator[Path]:
    """Image files below root, in a stable order (sorted by path parts), skipping hidden files and folders.

    Walks with os.scandir (file types come with the listing) instead of rglob + stat per file:
    about 4x faster on trees of tens of thousands of crops.
    """
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from iter_images(Path(entry.path))
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES and entry.is_file():
            yield Path(entry.path)


def label_from_path(path: Path, root: Path) -> str | None:
    relative = path.relative_to(root)
    for folder in reversed(relative.parts[:-1]):
        label = parse_label(folder)
        if label is not None:
            return label
    return None


def _read_manifest(root: Path) -> list[Sample]:
    samples: list[Sample] = []
    with open(root / MANIFEST_NAME, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{root / MANIFEST_NAME}: missing column(s) {', '.join(sorted(missing))}")
        for number, row in enumerate(reader, start=2):
            label = parse_label(row["label"])
            if label is None:
                raise ValueError(f"{root / MANIFEST_NAME}:{number}: unknown label {row['label']!r}")
            case = (row.get("case") or "").strip() or UNKNOWN
            cell = (row.get("cell") or "").strip() or UNKNOWN
            samples.append(Sample(root / row["path"], label, case, cell))
    return samples


def _scan_tree(root: Path) -> list[Sample]:
    samples: list[Sample] = []
    for path in iter_images(root):
        label = label_from_path(path, root)
        if label is None:
            continue
        parts = path.relative_to(root).parts
        top = parts[0] if len(parts) > 1 and parse_label(parts[0]) is None else ""
        case = top or UNKNOWN
        # the folder right above the class folder groups one cell's crops when it is not the case
        cell_parts = [p for p in parts[:-1] if parse_label(p) is None]
        cell = cell_parts[-1] if cell_parts else UNKNOWN
        samples.append(Sample(path, label, case, cell))
    return samples


def read_labeled_folder(root: str | Path, use_manifest: bool = True) -> list[Sample]:
    """All labeled images below root. Raises ValueError if there are none."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder")
    if use_manifest and (root / MANIFEST_NAME).is_file():
        samples = _read_manifest(root)
    else:
        samples = _scan_tree(root)
    if not samples:
        raise ValueError(f"{root}: no labeled images (expected class folders like 1, 01, chr_01, clase1, X)")
    return samples


def read_labeled_folders(roots: list[str | Path], use_manifest: bool = True) -> list[Sample]:
    """Several trees at once; each tree's cases are prefixed with its folder name to keep them apart."""
    if len(roots) == 1:
        return read_labeled_folder(roots[0], use_manifest)
    merged: list[Sample] = []
    for root in roots:
        name = Path(root).resolve().name
        for s in read_labeled_folder(root, use_manifest):
            merged.append(Sample(s.path, s.label, f"{name}:{s.case}", s.cell))
    return merged


def class_counts(samples: list[Sample]) -> dict[str, int]:
    return dict(Counter(s.label for s in samples))
