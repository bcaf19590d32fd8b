"""Training data: case-wise splits and an in-memory tensor cache built with the runtime's preprocessing.

Splits are by case (patient), never by image: crops of one patient share staining, scanner and
banding resolution, so an image-level split leaks and overstates accuracy. Tensors come from
`karyo.runtime.preprocess.preprocess_path`, the same function the scanner PC runs.
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from karyo.runtime.dataset import UNKNOWN, Sample
from karyo.runtime.labels import LabelScheme
from karyo.runtime.preprocess import PreprocessSpec


def select_scheme_samples(samples: Sequence[Sample], labels: LabelScheme) -> tuple[list[Sample], dict[str, int]]:
    """Samples whose label belongs to the scheme, and a count of what was left out, per label."""
    kept = [s for s in samples if s.label in labels]
    dropped = Counter(s.label for s in samples if s.label not in labels)
    return kept, dict(dropped)


@dataclass(frozen=True)
class ExclusionList:
    """Crops a lab has decided not to train on (e.g. rows of `karyo audit --csv` it could not settle).

    They are left out of fitting, early stopping and the size prior only: the split is made before,
    so the folds stay the ones made without the list, and held-out crops keep their labels, so
    accuracy is still measured against the data as given, never against an edited truth."""

    source: str
    sha256: str
    paths: frozenset[Path]

    @classmethod
    def read(cls, path: str | Path) -> "ExclusionList":
        """A CSV with a `path` column (the audit's) or one path per line; relative paths from here."""
        file = Path(path)
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise ValueError(f"{file}: cannot read the exclusion list ({exc.strerror or exc})") from None
        lines = raw.decode("utf-8-sig", errors="replace").splitlines()
        header = next(csv.reader(lines[:1]), [])
        if "path" in header:
            listed = [row["path"] for row in csv.DictReader(lines) if row.get("path")]
        else:
            listed = [line.strip() for line in lines if line.strip()]
        return cls(str(file), hashlib.sha256(raw).hexdigest(), frozenset(Path(p).resolve() for p in listed))

    def keep(self, samples: Sequence[Sample]) -> list[Sample]:
        return [s for s in samples if Path(s.path).resolve() not in self.paths]

    def unmatched(self, samples: Sequence[Sample]) -> int:
        """How many listed paths are not crops of the data (a list written elsewhere, or stale)."""
        return len(self.paths - {Path(s.path).resolve() for s in samples})

    def to_dict(self, left_out: int) -> dict[str, Any]:
        return {"file": self.source, "sha256": self.sha256, "listed": len(self.paths), "left_out": left_out}


def _group_by_case(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.case].append(s)
    return groups


def _flatten(groups: dict[str, list[Sample]], cases: Sequence[str]) -> list[Sample]:
    return [s for case in cases for s in groups[case]]


def case_split(samples: Sequence[Sample], test_fraction: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Split by case into (train, test) with about `test_fraction` of the samples in test.

    Cases are shuffled and taken for the test side until the fraction is reached; then any class
    that has no sample left on the train side gets back a test case holding it (the smallest one),
    so every class is trained on. With a single case everything is train.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test fraction must be in [0, 1), got {test_fraction}")
    groups = _group_by_case(samples)
    cases = sorted(groups)
    random.Random(seed).shuffle(cases)
    target = test_fraction * len(samples)
    test_cases: list[str] = []
    taken = 0
    for case in cases:
        if taken >= target or len(test_cases) >= len(cases) - 1:
            break
        test_cases.append(case)
        taken += len(groups[case])
    all_labels = {s.label for s in samples}
    while True:
        train_labels = {s.label for case in cases if case not in test_cases for s in groups[case]}
        missing = all_labels - train_labels
        if not missing:
            break
        holders = [c for c in test_cases if any(s.label in missing for s in groups[c])]
        test_cases.remove(min(holders, key=lambda c: (len(groups[c]), c)))
    test_set = set(test_cases)
    train_cases = [c for c in cases if c not in test_set]
    return _flatten(groups, train_cases), _flatten(groups, test_cases)


def case_folds(samples: Sequence[Sample], k: int, seed: int = 0) -> list[tuple[list[Sample], list[Sample]]]:
    """k case-wise folds as (train, test) pairs; every case is tested exactly once.

    Cases go, largest first (ties in shuffled order), to the fold with the fewest samples so far,
    which keeps fold sizes even when case sizes differ a lot.
    """
    groups = _group_by_case(samples)
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    if len(groups) < k:
        raise ValueError(f"{k}-fold by case needs at least {k} cases, the data has {len(groups)}")
    cases = sorted(groups)
    random.Random(seed).shuffle(cases)
    cases.sort(key=lambda c: -len(groups[c]))  # stable: shuffled order among equal sizes
    folds: list[list[str]] = [[] for _ in range(k)]
    sizes = [0] * k
    for case in cases:
        target = min(range(k), key=lambda i: (sizes[i], i))
        folds[target].append(case)
        sizes[target] += len(groups[case])
    result = []
    for i in range(k):
        held = set(folds[i])
        train = _flatten(groups, [c for c in sorted(groups) if c not in held])
        result.append((train, _flatten(groups, sorted(held))))
    return result


def storage_dtype(spec: PreprocessSpec) -> np.dtype:
    """float16 above 128x128 px: 17.5k crops at 300 px are 6.3 GB as float32, 3.2 GB as float16."""
    return np.dtype(np.float16 if spec.size * spec.width > 128 * 128 else np.float32)


def sample_to_dict(sample: Sample) -> dict[str, str]:
    return {"path": str(Path(sample.path).resolve()), "label": sample.label, "case": sample.case, "cell": sample.cell}


def sample_from_dict(data: dict[str, Any]) -> Sample:
    return Sample(Path(data["path"]), str(data["label"]), str(data.get("case", UNKNOWN)), str(data.get("cell", UNKNOWN)))
