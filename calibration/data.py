"""Calibration and evaluation tensors, made by the runtime's one preprocessing path.

INT8 ranges are only as good as the crops they are measured on: a calibration set drawn from one
patient or a handful of classes leaves other chromosomes' activations outside the range. So the
set is stratified by class first and by case within each class. Tensors come from
`karyo.runtime.tensors.load_labeled_tensors` with the bundle's own spec, so calibration sees exactly
the pixels the scanner PC will feed the model.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from karyo.runtime.dataset import Sample


def select_stratified(samples: Sequence[Sample], size: int, seed: int = 0) -> list[Sample]:
    """Up to `size` samples, spread as evenly as possible over classes, then over cases.

    Round-robin: each pass takes one sample per class (classes in shuffled order), and within a
    class cycles through its cases, so 200 crops from 24 classes and 10 cases give ~8 per class
    drawn from ~8 different cases rather than 8 crops of one cell.
    """
    if size <= 0 or not samples:
        return []
    rng = random.Random(seed)
    by_class: dict[str, dict[str, list[Sample]]] = defaultdict(lambda: defaultdict(list))
    for sample in sorted(samples, key=lambda s: str(s.path)):
        by_class[sample.label][sample.case].append(sample)
    queues: dict[str, list[list[Sample]]] = {}
    for label, cases in by_class.items():
        case_lists = [cases[c] for c in sorted(cases)]
        for items in case_lists:
            rng.shuffle(items)
        rng.shuffle(case_lists)
        queues[label] = case_lists
    labels = sorted(queues)
    rng.shuffle(labels)
    cursor = {label: 0 for label in labels}
    chosen: list[Sample] = []
    while len(chosen) < size and labels:
        for label in list(labels):
            case_lists = queues[label]
            # next non-empty case for this class, cycling
            picked = None
            for _ in range(len(case_lists)):
                index = cursor[label] % len(case_lists)
                cursor[label] += 1
                if case_lists[index]:
                    picked = case_lists[index].pop()
                    break
            if picked is None:
                labels.remove(label)
                continue
            chosen.append(picked)
            if len(chosen) >= size:
                break
    return chosen


def paths_sha256(samples: Sequence[Sample]) -> str:
    """Fingerprint of a sample set: sha256 of its sorted path list (one path per line)."""
    text = "\n".join(sorted(str(Path(s.path)) for s in samples))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def common_source(samples: Sequence[Sample]) -> str:
    """The folder all samples live under: where a later `quantize` can find them again."""
    if not samples:
        return ""
    try:
        return os.path.commonpath([str(Path(s.path).resolve().parent) for s in samples])
    except ValueError:  # different drives on Windows
        return "mixed"


def provenance(samples: Sequence[Sample], source: str | None, tensors_used: int) -> dict[str, Any]:
    return {
        "source": source if source is not None else common_source(samples),
        "count": int(tensors_used),
        "sha256": paths_sha256(samples),
        "classes": len({s.label for s in samples}),
        "cases": len({s.case for s in samples}),
    }


class TensorDataReader(CalibrationDataReader):
    """Feeds preprocessed tensors to onnxruntime's calibrators in fixed-size batches; rewindable."""

    def __init__(self, tensors: np.ndarray, input_name: str = "image", batch_size: int = 32) -> None:
        self.tensors = np.ascontiguousarray(tensors, dtype=np.float32)
        self.input_name = input_name
        self.batch_size = max(1, int(batch_size))
        self._start = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._start >= len(self.tensors):
            return None
        batch = self.tensors[self._start : self._start + self.batch_size]
        self._start += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._start = 0

    def __len__(self) -> int:
        return (len(self.tensors) + self.batch_size - 1) // self.batch_size
