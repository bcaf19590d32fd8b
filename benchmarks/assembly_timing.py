"""Time karyotype assembly per cell (numpy only, no model): `python benchmarks/assembly_timing.py`.

Cells are 46 crops (46,XY) with synthetic classifier outputs at three difficulty levels; the
figure that matters for the scanner PC is the median per-cell time of `assemble_cell`.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from karyo.runtime.assembly import assemble_cell
from karyo.runtime.labels import NORMAL24, scheme

LEVELS = {  # name: (Dirichlet concentration of the noise, range of the extra mass on the true class)
    "clean": (0.3, (0.3, 2.0)),
    "typical": (0.5, (0.05, 1.0)),
    "hard": (1.0, (0.0, 0.5)),
}


def synthetic_cells(alpha: float, boost: tuple[float, float], count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.array([NORMAL24.index(c) for c in NORMAL24[:22] for _ in range(2)] + [22, 23])
    cells = []
    for _ in range(count):
        probs = rng.dirichlet(np.ones(24) * alpha, size=len(truth))
        probs[np.arange(len(truth)), truth] += rng.uniform(*boost, size=len(truth))
        cells.append(probs / probs.sum(axis=1, keepdims=True))
    return cells


def main(count: int = 300) -> dict[str, dict[str, float]]:
    labels = scheme("normal24")
    truth = np.array([i for i in range(22) for _ in range(2)] + [22, 23])
    report = {}
    for name, (alpha, boost) in LEVELS.items():
        cells = synthetic_cells(alpha, boost, count)
        assemble_cell(cells[0], labels)  # warm caches
        times, top1 = [], []
        for probs in cells:
            start = time.perf_counter()
            assemble_cell(probs, labels)
            times.append(time.perf_counter() - start)
            top1.append(float((probs.argmax(axis=1) == truth).mean()))
        ms = np.array(times) * 1e3
        report[name] = {"top1": round(float(np.mean(top1)), 3), "median_ms": round(float(np.median(ms)), 3),
                        "p90_ms": round(float(np.percentile(ms, 90)), 3), "max_ms": round(float(ms.max()), 3)}
    return report


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300), indent=2))
