"""The end-to-end demo: synthetic chromosomes -> trained `edge` model -> verified FP32/FP16/INT8 bundle
-> one synthetic metaphase classified offline.

It needs no data and no network, so a new user sees every stage work (and how long each takes)
before bringing their own crops. `fast` is the same path at toy scale, for tests.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DemoSettings:
    cells: int  # synthetic metaphases (about 46 crops each), 3 per synthetic patient
    input_size: tuple[int, int]  # model input, height x width px
    epochs: int
    batch_size: int
    crop_size: int = 100  # synthetic height of chromosome 1, px (scanner crops are about this size)


# Full: ~3,300 crops from 24 synthetic patients. Held-out accuracy passes 99% by epoch 5-6 of 14
# with 100 cells, so 8 epochs on 72 cells keep the demo near 5 minutes on 2 busy CPU cores.
FULL = DemoSettings(cells=72, input_size=(96, 32), epochs=8, batch_size=64)
# A trisomy shows what assembly adds over per-crop guesses: the third 21 must be kept, not forced away.
DEMO_CELL = "47,XY,+21"
FAST = DemoSettings(cells=12, input_size=(48, 16), epochs=10, batch_size=16, crop_size=60)


@dataclass
class DemoResult:
    out: Path
    bundle: Path
    timings: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)  # precision -> held-out accuracy
    cell: dict[str, Any] = field(default_factory=dict)
    int8_rejected: str | None = None  # the calibration gate's reason, when INT8 was left out


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def run_demo(out: str | Path, fast: bool = False, seed: int = 0, progress: bool = True) -> DemoResult:
    """Run every stage into `out` (data/, model/, bundle/) and return what happened, with timings."""
    from karyo.runtime.bundle import load_bundle
    from karyo.runtime.classifier import Classifier

    from karyo.runtime.karyogram import draw_karyogram
    from karyo.runtime.karyotype import karyotype_cell

    from .convert import convert_model
    from .synth import generate_dataset, render_cell
    from .train import train_model

    settings = FAST if fast else FULL
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out=out, bundle=out / "bundle")
    started = time.perf_counter()

    def lap(name: str, tick: float) -> float:
        now = time.perf_counter()
        result.timings[name] = round(now - tick, 1)
        return now

    _say(progress, f"[1/4] drawing {settings.cells} synthetic metaphases")
    tick = time.perf_counter()
    data = generate_dataset(out / "data", cells=settings.cells, size=settings.crop_size, seed=seed, progress=progress)
    tick = lap("synthesize_s", tick)

    height, width = settings.input_size
    _say(progress, f"[2/4] training edge ({height}x{width} px, up to {settings.epochs} epochs)")
    model_dir = train_model(
        [data], out / "model", arch="edge", epochs=settings.epochs, input_size=settings.input_size,
        batch_size=settings.batch_size, seed=seed, patience=4, progress=progress,
    )
    tick = lap("train_s", tick)

    _say(progress, "[3/4] exporting ONNX FP32, FP16 and INT8 (parity and drift on held-out synthetic patients)")
    convert_model(model_dir, result.bundle, precisions=("fp32", "fp16", "int8"), progress=progress)
    tick = lap("convert_s", tick)

    _say(progress, f"[4/4] karyotyping one synthetic {DEMO_CELL} metaphase with the bundle (onnxruntime, CPU)")
    bundle = load_bundle(result.bundle)
    for precision in bundle.available_precisions:
        result.accuracy[precision] = float(bundle.metrics(precision).get("accuracy", float("nan")))
    result.int8_rejected = bundle.manifest.provenance.get("int8_rejected")
    crops = render_cell(DEMO_CELL, seed=seed + 10_000, size=settings.crop_size)
    classifier = Classifier(bundle, provider="cpu")
    cell_tick = time.perf_counter()
    probs = classifier.predict_arrays([crop for _, crop in crops])
    call = karyotype_cell(probs, bundle.labels)
    cell_ms = (time.perf_counter() - cell_tick) * 1000.0
    predicted = [bundle.labels.labels[i] for i in np.argmax(probs, axis=1)]
    assembled = [a.label for a in call.assignments]
    truth = [label for label, _ in crops]
    karyogram = draw_karyogram([crop for _, crop in crops], call.assignments, out / "karyogram.png",
                               title=f"synthetic {DEMO_CELL}: called {call.karyotype}")
    result.cell = {
        "karyotype": DEMO_CELL,
        "called": call.karyotype,
        "findings": call.findings,
        "crops": len(crops),
        "correct": int(sum(p == t for p, t in zip(predicted, truth))),
        "correct_assembled": int(sum(p == t for p, t in zip(assembled, truth))),
        "review": int(sum(a.review for a in call.assignments)),
        "precision": classifier.precision,
        "milliseconds": round(cell_ms, 1),
        "wrong": [(t, p) for t, p in zip(truth, assembled) if t != p],
        "karyogram": str(karyogram),
    }
    lap("classify_cell_s", tick)
    result.timings["total_s"] = round(time.perf_counter() - started, 1)
    return result


def format_summary(result: DemoResult) -> str:
    """What was written, how long each stage took, and how well the bundle did."""
    lines = [f"demo finished in {result.timings.get('total_s', 0):.0f} s", "", "files:"]
    for name in ("data", "model", "bundle"):
        folder = result.out / name
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.is_file())
            count = sum(1 for p in folder.rglob("*") if p.is_file())
            lines.append(f"  {folder}/  ({count} files)")
            if name != "data":
                for p in files:
                    lines.append(f"    {p.name:<22} {p.stat().st_size / 1024:>9.1f} KiB")
    lines += ["", "timings:"]
    for key, seconds in result.timings.items():
        lines.append(f"  {key.removesuffix('_s'):<16} {seconds:>7.1f} s")
    lines += ["", "held-out accuracy (synthetic patients the model never saw):"]
    for precision, accuracy in result.accuracy.items():
        lines.append(f"  {precision:<5} {accuracy:.4f}")
    if result.int8_rejected:
        lines.append(f"  int8  not in the bundle: {result.int8_rejected}")
    cell = result.cell
    if cell:
        lines += [
            "",
            f"one synthetic {cell['karyotype']} metaphase, {cell['crops']} crops, {cell['precision']}, "
            f"{cell['milliseconds']:.0f} ms: called {cell['called']}",
            f"  crops right: {cell['correct']} top-1, {cell['correct_assembled']} after assembly; "
            f"{cell['review']} flagged for review",
            f"  karyogram: {cell['karyogram']}",
        ]
        if cell["findings"]:
            lines.append("  findings: " + "; ".join(cell["findings"]))
        if cell["wrong"]:
            lines.append("  mistakes (true -> assigned): " + ", ".join(f"{t}->{p}" for t, p in cell["wrong"][:12]))
    # The README's command does not activate the virtual environment: name the installed script.
    installed = Path(sys.executable).parent / "karyo"
    karyo = str(installed) if installed.exists() else "karyo"
    lines += ["", f"try: {karyo} classify {result.bundle} {result.out / 'data' / '1'}",
              f"     {karyo} evaluate {result.bundle} {result.out / 'data'}",
              f"     {karyo} karyotype {result.bundle} --by-cell {result.out / 'data'} --karyogram {result.out / 'karyograms'}"]
    return "\n".join(lines)
