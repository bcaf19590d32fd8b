"""Labeled crops preprocessed into one array: what training, calibration and export all feed on.

One loader for all three keeps their pixels identical (they all go through
`preprocess.preprocess_path`) and their handling of bad crops identical: skipped, named, counted.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .dataset import Sample
from .labels import LabelScheme
from .preprocess import ImageError, PreprocessSpec, prepare_path
from .progress import Progress


@dataclass
class LabeledTensors:
    """NHWC tensors with class indices; `samples[i]` belongs to `x[i]` and `y[i]`."""

    x: np.ndarray  # (N, H, W, 1)
    y: np.ndarray  # (N,) int64
    samples: list[Sample]
    skipped: list[str]  # one message per crop left out (unreadable, or a label outside the scheme)
    sizes: np.ndarray | None = None  # (N, 2) chromosome length and area in source px, NaN if unmeasured

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, keep: Sequence[Sample]) -> "LabeledTensors":
        position = {s: i for i, s in enumerate(self.samples)}
        index = np.array([position[s] for s in keep if s in position], dtype=np.int64)
        sizes = self.sizes[index] if self.sizes is not None else None
        return LabeledTensors(self.x[index], self.y[index], [self.samples[i] for i in index], [], sizes)


def load_labeled_tensors(
    samples: Sequence[Sample],
    spec: PreprocessSpec,
    labels: LabelScheme,
    title: str = "preprocess",
    progress: bool = True,
    dtype: np.dtype | type = np.float32,
) -> LabeledTensors:
    """Preprocess every sample once. `dtype=float16` halves memory for large inputs (300 px)."""
    x = np.empty((len(samples), *spec.input_shape), dtype=dtype)
    y = np.empty(len(samples), dtype=np.int64)
    sizes = np.full((len(samples), 2), np.nan)
    kept: list[Sample] = []
    skipped: list[str] = []
    meter = Progress(len(samples), title, progress)
    for number, sample in enumerate(samples, start=1):
        if sample.label not in labels:
            skipped.append(f"{sample.path}: label {sample.label!r} is not in scheme {labels.name}")
        else:
            try:
                x[len(kept)], size = prepare_path(sample.path, spec)
            except ImageError as exc:
                skipped.append(str(exc))
                if progress:
                    print(f"skipped: {exc}", file=sys.stderr)
            else:
                y[len(kept)] = labels.index(sample.label)
                if size is not None:
                    sizes[len(kept)] = size
                kept.append(sample)
        meter.update(number)
    meter.close()
    return LabeledTensors(x[: len(kept)], y[: len(kept)], kept, skipped, sizes[: len(kept)])
