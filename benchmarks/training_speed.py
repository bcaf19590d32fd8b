"""Time a training step with and without restoring glibc's malloc thresholds, in one run.

`python benchmarks/training_speed.py [--crops 1280] [--epochs 2] [--rounds 2] [--json OUT]`

Each training runs `karyo.export.train.fit_model` (the product's own loop: augmented batches
through Keras' PyDataset, class weights, the cosine schedule) on synthetic uint8 crops of the
default 96x32 input, in a child process of its own, since the thresholds are process-wide. The two
arms alternate, so a machine that slows down over the run slows both; the first epoch (tracing,
the heap's first growth) is left out of the per-step time. Reported per arm: ms per step (best
and median over the rounds), CPU seconds per step (work done, against time waited), the share
of CPU time spent in the kernel, page faults per step, resident memory at the end, and a digest
of the trained weights (equal in both arms: the allocator moves no number).
Why it matters: `export/allocator.py`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

CHILD = """
import hashlib, json, resource, sys
import numpy as np
import keras
import karyo.export.train as train
from karyo.runtime.labels import scheme
from karyo.runtime.preprocess import PreprocessSpec
from karyo.runtime.tensors import LabeledTensors

arm, crops, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if arm == "pinned":  # TensorFlow's threshold left as from_generator sets it
    train.malloc_thresholds_callback = lambda: keras.callbacks.Callback()
labels, spec = scheme("normal24"), PreprocessSpec(size=96, width=32)
rng = np.random.default_rng(0)
data = LabeledTensors(x=rng.integers(0, 255, (crops, 96, 32, 1), dtype=np.uint8),
                      y=np.arange(crops) % len(labels), samples=[], skipped=[])
usage = []

class Usage(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        usage.append(resource.getrusage(resource.RUSAGE_SELF))

real_fit = keras.Model.fit
def fit(self, *args, callbacks=None, **kwargs):
    return real_fit(self, *args, callbacks=[*(callbacks or []), Usage()], **kwargs)
keras.Model.fit = fit
model, history = train.fit_model(data, None, "edge", labels, spec, epochs=epochs, verbose=0)
end = resource.getrusage(resource.RUSAGE_SELF)
start = usage[1]  # from the second epoch on
steps = (epochs - 1) * -(-crops // 64)
user, system = end.ru_utime - start.ru_utime, end.ru_stime - start.ru_stime
print(json.dumps({
    "arm": arm,
    "ms_per_step": round(1000 * sum(history["epoch_seconds"][1:]) / steps, 1),
    "cpu_s_per_step": round((user + system) / steps, 3),  # against ms_per_step: work done, or waiting
    "kernel_share": round(system / (user + system), 3),
    "faults_per_step": round((end.ru_minflt - start.ru_minflt) / steps),
    "rss_mb": int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024,
    "weights": hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights())).hexdigest()[:16],
}))
"""

ARMS = ("pinned", "restored")


def run_arm(arm: str, crops: int, epochs: int) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", CHILD, arm, str(crops), str(epochs)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training child ({arm}) failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per arm, and each arm's best step time: other work on a shared machine only ever slows a
    training down, so the ratio of the bests is the steadier figure of the two."""
    summary: dict[str, Any] = {}
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        summary[arm] = {key: statistics.median(r[key] for r in mine) for key in ("ms_per_step", "cpu_s_per_step", "kernel_share", "faults_per_step", "rss_mb")}
        summary[arm]["best_ms_per_step"] = min(r["ms_per_step"] for r in mine)
    summary["speedup"] = round(summary["pinned"]["best_ms_per_step"] / summary["restored"]["best_ms_per_step"], 2)
    summary["same_weights"] = len({r["weights"] for r in runs}) == 1
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=1280, help="synthetic training crops (64 per step)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per training; the first is not timed")
    parser.add_argument("--rounds", type=int, default=2, help="trainings per arm, alternating")
    parser.add_argument("--json", type=Path, help="also write runs and summary here")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is not timed)")
    runs = []
    for round_ in range(args.rounds):
        for arm in ARMS:
            runs.append(run_arm(arm, args.crops, args.epochs))
            print(f"round {round_ + 1}/{args.rounds} {arm}: {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
    summary = summarize(runs)
    for arm in ARMS:
        s = summary[arm]
        print(f"{arm:9s} {s['best_ms_per_step']:7.1f} ms/step best, {s['ms_per_step']:7.1f} median, "
              f"{s['cpu_s_per_step']:.2f} CPU s/step  kernel "
              f"{100 * s['kernel_share']:4.1f}%  {s['faults_per_step']:8.0f} faults/step  {s['rss_mb']:5.0f} MB resident")
    print(f"restored is {summary['speedup']}x faster per step (best against best); weights identical: {summary['same_weights']}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
