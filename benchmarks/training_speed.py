"""Time a training step as the product trains, and with TensorFlow's own CPU settings, in one run.

`python benchmarks/training_speed.py [--crops 1280] [--epochs 2] [--rounds 2] [--arms restored,pinned,eigen,eigen-pinned]
[--json OUT]`

Each training runs `karyo.export.train.fit_model` (the product's own loop: augmented batches
through Keras' PyDataset, class weights, the cosine schedule) on synthetic uint8 crops of the
default 96x32 input, in a child process of its own, since both settings are process-wide. The arms:
`restored`, training as the product runs it (glibc's malloc thresholds restored, `export/allocator.py`;
TensorFlow's oneDNN kernels, `prefer_onednn_kernels` in `export/models.py`); `pinned`, the same with the
thresholds as TensorFlow's from_generator leaves them; `eigen`, the same with TF_ENABLE_ONEDNN_OPTS=0,
TensorFlow's own choice on x86 CPUs without AVX-512 VNNI; `eigen-pinned`, both, which is how TensorFlow
trains on such a CPU left to itself. The arms alternate, so a machine that slows
down over the run slows all; the first epoch (tracing, the heap's first growth) is left out of the
per-step time. Reported per arm: ms per step (best and median over the rounds), CPU seconds per step
(work done, against time waited), the share of CPU time spent in the kernel, page faults per step,
resident memory at the end, the CPU kernels TensorFlow used, and a digest of the trained weights
(`pinned` must equal `restored`, and `eigen-pinned` `eigen`: the allocator moves no number; Eigen rounds
differently from oneDNN).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

CHILD = """
import hashlib, json, resource, sys
from karyo.export.models import configure_backend, tensorflow_cpu_kernels
configure_backend()  # before Keras loads TensorFlow, as `karyo-export train` does
import numpy as np
import keras
import karyo.export.train as train
from karyo.runtime.labels import scheme
from karyo.runtime.preprocess import PreprocessSpec
from karyo.runtime.tensors import LabeledTensors

arm, crops, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if arm.endswith("pinned"):  # TensorFlow's threshold left as from_generator sets it
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
    "cpu_kernels": tensorflow_cpu_kernels(),
    "weights": hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights())).hexdigest()[:16],
}))
"""

# arm -> environment it adds; `pinned` is also told apart inside the child
EIGEN = {"TF_ENABLE_ONEDNN_OPTS": "0"}
ARMS: dict[str, dict[str, str]] = {"restored": {}, "pinned": {}, "eigen": EIGEN, "eigen-pinned": EIGEN}
PRODUCT = "restored"


def run_arm(arm: str, crops: int, epochs: int) -> dict[str, Any]:
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    env.update(ARMS[arm])
    done = subprocess.run([sys.executable, "-c", CHILD, arm, str(crops), str(epochs)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"training child ({arm}) failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def twin(arm: str) -> str | None:
    """The arm a pinned arm must train the same weights as."""
    return arm.removesuffix("-pinned") if arm.endswith("-pinned") else ("restored" if arm == "pinned" else None)


def summarize(runs: list[dict[str, Any]], arms: list[str]) -> dict[str, Any]:
    """Medians per arm, each arm's best step time, how much slower each other arm is than the product's
    (best against best: other work on a shared machine only ever slows a training down, so the ratio of
    the bests is the steadier figure), and whether each pinned arm trained its twin's weights."""
    summary: dict[str, Any] = {}
    weights = {arm: {r["weights"] for r in runs if r["arm"] == arm} for arm in arms}
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm]
        summary[arm] = {key: statistics.median(r[key] for r in mine) for key in ("ms_per_step", "cpu_s_per_step", "kernel_share", "faults_per_step", "rss_mb")}
        summary[arm]["best_ms_per_step"] = min(r["ms_per_step"] for r in mine)
        summary[arm]["cpu_kernels"] = sorted({str(r.get("cpu_kernels")) for r in mine})
        other = twin(arm)
        if other in weights:
            summary[arm]["same_weights_as"] = {other: weights[arm] == weights[other]}
    if PRODUCT in arms:
        best = summary[PRODUCT]["best_ms_per_step"]
        summary["product_speedup"] = {arm: round(summary[arm]["best_ms_per_step"] / best, 2) for arm in arms if arm != PRODUCT}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=1280, help="synthetic training crops (64 per step)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per training; the first is not timed")
    parser.add_argument("--rounds", type=int, default=2, help="trainings per arm, alternating")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    parser.add_argument("--json", type=Path, help="also write runs and summary here")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is not timed)")
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not arms or any(a not in ARMS for a in arms):
        parser.error(f"--arms takes {', '.join(ARMS)}, comma-separated")
    runs = []
    for round_ in range(args.rounds):
        for arm in arms:
            runs.append(run_arm(arm, args.crops, args.epochs))
            print(f"round {round_ + 1}/{args.rounds} {arm}: {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
    summary = summarize(runs, arms)
    for arm in arms:
        s = summary[arm]
        print(f"{arm:12s} {s['best_ms_per_step']:7.1f} ms/step best, {s['ms_per_step']:7.1f} median, "
              f"{s['cpu_s_per_step']:.2f} CPU s/step  kernel "
              f"{100 * s['kernel_share']:4.1f}%  {s['faults_per_step']:8.0f} faults/step  {s['rss_mb']:5.0f} MB resident  "
              f"{'/'.join(s['cpu_kernels'])}")
    for arm, ratio in summary.get("product_speedup", {}).items():
        print(f"{PRODUCT} is {ratio}x faster per step than {arm} (best against best)")
    for arm in arms:
        for other, same in summary[arm].get("same_weights_as", {}).items():
            print(f"{arm} trained the same weights as {other}: {same}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
