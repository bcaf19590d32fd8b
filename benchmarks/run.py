"""The whole karyo benchmark in one command; appends one record to `benchmarks/history.jsonl`.

    python benchmarks/run.py [--quick] [--out benchmarks/out] [--bundle B --real-data DIR [--split split.json]] [--demo]

1. Latency: `seed-dcnn` (300 px) and `edge` (its default size), FP32/FP16/INT8 ONNX at batch 1/46/64,
   against the study's own path in the same process (Keras `model.predict`, and the direct
   `model(x, training=False)` call), with ratios and the share of the machine's GEMM ceiling.
2. Cell: one 46-crop cell from PNG files on disk to a karyotype with INT8 `edge` (goal < 50 ms),
   read as given and either way up (`--orientation any`: a second pass of the network).
3. Drift: FP32/FP16/INT8 accuracy and agreement, on synthetic cells and (with a trained bundle)
   on real held-out cases.
4. Demo: wall time of `karyo-export demo` (only with --demo; minutes).
The models of parts 1-2 are untrained or briefly trained: latency does not depend on weights.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import history  # noqa: E402
import suite  # noqa: E402
from hardware import best_of, gemm_peaks  # noqa: E402
from keras_side import (  # noqa: E402
    EXPORT_MEMORY_GB,
    available_memory_gb,
    count_macs_keras,
    export_fingerprint,
    keras_latency,
    keras_model,
    make_bundle,
)
from report import report  # noqa: E402

from karyo.runtime.bench import library_versions, machine_info, peak_rss_mb  # noqa: E402
from karyo.runtime.dataset import Sample, read_labeled_folder  # noqa: E402

REPO = HERE.parent
SHARED_DATA = REPO.parent / "shared" / "data"
BATCH_SIZES = (1, 46, 64)


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


def synthetic_samples(folder: Path, cells: int, seed: int) -> list[Sample]:
    """Synthetic labelled cells (karyo.export.synth); falls back to the real crops if synth is missing."""
    try:
        from karyo.export.synth import generate_dataset  # type: ignore[attr-defined]
    except ImportError as exc:
        say(f"synthetic data unavailable ({exc})")
        return []
    root = generate_dataset(folder, cells=cells, scheme="normal24", seed=seed, progress=False)
    return read_labeled_folder(root)


def calibration_samples(work: Path, quick: bool) -> tuple[list[Sample], str]:
    samples = synthetic_samples(work / "synth-calibration", 10 if quick else 24, seed=101)
    if samples:
        return samples, "synthetic"
    real = SHARED_DATA / "pki-dev"
    if real.is_dir():
        return suite.limit_samples(read_labeled_folder(real), 150 if quick else 400, seed=3), "pki-dev"
    raise SystemExit("no calibration crops: karyo.export.synth is missing and ../shared/data is absent")


# --------------------------------------------------------------------------- parts


def untrained_bundle(args, arch: str, size: tuple[int, int], threads: int) -> tuple[Path | None, str]:
    """The cached export of an untrained `arch`, made in a child process when missing.

    The child keeps tf2onnx's memory peak out of this process (and its records), and a child killed
    for memory costs a fresh export, not the run: the previous export (made by older export code)
    is then timed instead, and the record says so. With less free memory than the export needs,
    it is not attempted: on a shared machine the kernel might kill someone else's process.
    """
    root = args.out / "cache"
    tag = f"{size[0]}x{size[1]}"
    cache = root / f"{arch}-{tag}-{export_fingerprint()}"
    if (cache / "manifest.json").is_file() and not args.no_cache:
        return cache, "cached"
    for leftover in list(root.glob(f".{arch}-{tag}-*")) + list(root.glob(".export.*")):  # from a killed child
        shutil.rmtree(leftover, ignore_errors=True)
    older = sorted((p for p in root.glob(f"{arch}-{tag}-*") if (p / "manifest.json").is_file()), key=lambda p: p.stat().st_mtime)
    need, free = EXPORT_MEMORY_GB.get(arch, 4.0), available_memory_gb()
    if free is not None and free < need:
        failure = f"not exported: needs about {need:.0f} GB free memory for tf2onnx, {free:.1f} GB available"
    else:
        say(f"{arch}: exporting FP32/FP16/INT8 in a child process (tf2onnx: about 30 s, up to ~12 GB; cached afterwards)")
        command = [sys.executable, str(Path(__file__).resolve()), "--export-untrained", arch, "--export-to", str(cache),
                   "--threads", str(threads)] + (["--quick"] if args.quick else [])
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode == 0 and (cache / "manifest.json").is_file():
            for old in older:
                shutil.rmtree(old, ignore_errors=True)
            return cache, "exported this run"
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        failure = "export killed (out of memory?)" if done.returncode in (-9, 137) else f"export failed (exit {done.returncode}: {tail})"
    if older and not args.no_cache:
        return older[-1], f"stale cache {older[-1].name} (export code changed since; {failure})"
    return None, failure


def export_untrained_child(arch: str, out: Path, threads: int, quick: bool) -> int:
    from karyo.export.models import default_input_size
    from karyo.runtime.preprocess import PreprocessSpec

    size = default_input_size(arch)
    spec = PreprocessSpec(size=size[0], width=size[1])
    work = Path(tempfile.mkdtemp(prefix=".export.", dir=out.parent if out.parent.exists() else None))
    try:
        crops, _ = calibration_samples(work, quick=True)
        model, labels = keras_model(arch, size, threads, [], 0, spec)
        make_bundle(model, arch, labels, spec, out, crops[: 16 if quick else 64], quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def part_latency(args, work: Path, threads: int, calibration: list[Sample], record: dict[str, Any]) -> Path | None:
    from karyo.export.models import default_input_size
    from karyo.runtime.preprocess import PreprocessSpec

    iterations, max_seconds = (5, 2.0) if args.quick else (20, 8.0)
    rows: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    edge_bundle = None
    for arch in args.archs:
        size = default_input_size(arch)
        spec = PreprocessSpec(size=size[0], width=size[1])
        if arch == "edge":
            say(f"edge: building at {size[0]}x{size[1]} px, training briefly on {len(calibration)} synthetic crops, exporting")
            model, labels = keras_model(arch, size, threads, calibration, 10 if args.quick else 12, spec)
            bundle, how = make_bundle(model, arch, labels, spec, work / "bundle-edge", calibration, args.quick), "exported this run"
            edge_bundle = bundle
        else:
            bundle, how = untrained_bundle(args, arch, size, threads)
            say(f"{arch}: building at {size[0]}x{size[1]} px (untrained; bundle {how})")
            model, labels = keras_model(arch, size, threads, [], 0, spec)
        info: dict[str, Any] = {"input_size": f"{size[0]}x{size[1]}", "bundle": how, "parameters": int(model.count_params()),
                                "macs_per_image_keras": count_macs_keras(model)}
        info["macs_per_image"] = info["macs_per_image_keras"]  # replaced by the ONNX graph's count below
        if bundle is not None:
            say(f"{arch}: timing ONNX")
            onnx = suite.onnx_latency(bundle, arch, BATCH_SIZES, threads, iterations, max_seconds, progress=lambda t, a=arch: say(f"{a} {t}"))
            rows += onnx["rows"]
            info.update(macs_per_image=onnx["macs_per_image"], macs_unknown_nodes=onnx["macs_unknown_nodes"])
        say(f"{arch}: timing Keras")
        rows += keras_latency(model, arch, size, BATCH_SIZES, iterations, max_seconds)
        models[arch] = info
        del model
    suite.add_ratios(rows)
    record["latency"] = {"models": models, "rows": rows, "iterations": iterations, "max_seconds": max_seconds}
    return edge_bundle


def part_cell(args, work: Path, threads: int, edge_bundle: Path | None, record: dict[str, Any]) -> None:
    if edge_bundle is None:
        record["cell"] = {"skipped": "no edge bundle (edge not in --archs)"}
        return
    crops = cell_crops(work / "cell")
    if not crops:
        record["cell"] = {"skipped": "no 46-crop cell available (karyo.export.synth missing and ../shared/data absent)"}
        return
    iterations, max_seconds = (10, 3.0) if args.quick else (30, 10.0)
    result = suite.cell_latency(edge_bundle, crops, "int8", threads, iterations, max_seconds)
    result["source"] = crops[0].parent.name if crops else None
    record["cell"] = result
    either = suite.cell_latency(edge_bundle, crops, "int8", threads, iterations, max_seconds, orientation="any")
    either["ratio_to_p_arm_up"] = round(either["end_to_end"]["p50_ms"] / result["end_to_end"]["p50_ms"], 3)
    record["cell_any"] = either


def cell_crops(folder: Path) -> list[Path]:
    """46 crops as PNG files on disk: a synthetic 46,XY cell, else one real cell (TIFF) of 46 crops."""
    try:
        import cv2

        from karyo.export.synth import render_cell  # type: ignore[attr-defined]

        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for index, (label, crop) in enumerate(render_cell("46,XY", seed=7)):
            path = folder / f"{index:02d}_{label}.png"
            cv2.imwrite(str(path), crop)
            paths.append(path)
        return paths
    except ImportError:
        pass
    real = SHARED_DATA / "pki-dev"
    if real.is_dir():
        cells: dict[str, list[Path]] = {}
        for sample in read_labeled_folder(real):
            cells.setdefault(sample.cell_key, []).append(sample.path)
        for key in sorted(cells):
            if len(cells[key]) == 46:
                return cells[key]
    return []


def held_out_real(args, bundle_path: Path) -> tuple[list[Sample], str]:
    samples = read_labeled_folder(args.real_data)
    seen: set[str] = set()
    note = "no split given: cases may overlap the bundle's training data"
    if args.split:
        split = json.loads(Path(args.split).read_text())
        seen = set(split.get("train_cases", [])) | set(split.get("val_cases", []))
        note = f"training/validation cases of {args.split} excluded"
    else:
        manifest = json.loads((bundle_path / "manifest.json").read_text())
        provenance = manifest.get("provenance", {})
        found = _find_key(provenance, "train_cases")
        roots = [Path(r).resolve() for r in (_find_key(provenance, "data_roots") or [])]
        real = Path(args.real_data).resolve()
        if found:
            seen = set(found) | set(_find_key(provenance, "val_cases") or [])
            note = "training/validation cases listed in the bundle's provenance excluded"
        elif roots and not any(real == r or r in real.parents or real in r.parents for r in roots):
            note = f"all cases unseen: {real} is not among the bundle's training data roots ({', '.join(map(str, roots))})"
    kept = [s for s in samples if s.case not in seen]
    return suite.limit_samples(kept, 600 if args.quick else 3000, seed=5), note


def _find_key(data: Any, key: str) -> Any:
    if isinstance(data, dict):
        if key in data:
            return data[key]
        for value in data.values():
            found = _find_key(value, key)
            if found:
                return found
    return None


def part_drift(args, work: Path, threads: int, edge_bundle: Path | None, record: dict[str, Any]) -> None:
    drift: dict[str, Any] = {"synthetic": {}, "real": {}}
    synthetic = synthetic_samples(work / "synth-drift", 2 if args.quick else 8, seed=202)
    targets = {"bench-edge": edge_bundle} if edge_bundle else {}
    if args.bundle:
        targets["given"] = Path(args.bundle)
    if not synthetic:
        drift["synthetic"] = {"skipped": "karyo.export.synth not available"}
    for name, bundle in targets.items():
        if synthetic:
            say(f"drift: {name} on {len(synthetic)} synthetic crops")
            drift["synthetic"][name] = suite.precision_drift(bundle, synthetic, threads)
    if args.bundle and args.real_data:
        if Path(args.real_data).is_dir():
            samples, note = held_out_real(args, Path(args.bundle))
            say(f"drift: given bundle on {len(samples)} real held-out crops")
            drift["real"]["given"] = {**suite.precision_drift(Path(args.bundle), samples, threads), "note": note, "data": str(args.real_data)}
        else:
            drift["real"] = {"skipped": f"{args.real_data} is absent"}
    else:
        drift["real"] = {"skipped": "pass --bundle (a trained bundle) and --real-data DIR to measure drift on real held-out cases"}
    record["drift"] = drift


def part_demo(args, work: Path, record: dict[str, Any]) -> None:
    if not args.demo:
        record["demo"] = {"wall_s": None, "skipped": "pass --demo to time `karyo-export demo` (takes minutes)"}
        return
    command = [str(Path(sys.executable).parent / "karyo-export"), "demo", "--out", str(work / "demo")]
    say("timing " + " ".join(command))
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = round(time.perf_counter() - started, 1)
    record["demo"] = {"wall_s": wall if done.returncode == 0 else None, "returncode": done.returncode,
                      "stderr_tail": done.stderr[-500:] if done.returncode else None}


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations and smaller data (a few minutes)")
    parser.add_argument("--out", type=Path, default=HERE / "out", help="pictures, record.json and work files")
    parser.add_argument("--history", type=Path, default=history.HISTORY_FILE, help="JSON-lines history to append to")
    parser.add_argument("--threads", type=int, default=None, help="threads for ONNX Runtime, TensorFlow and BLAS (default: all cores)")
    parser.add_argument("--archs", nargs="+", default=["seed-dcnn", "edge"], choices=["seed-dcnn", "edge"])
    parser.add_argument("--bundle", type=Path, help="a trained bundle for drift figures")
    parser.add_argument("--real-data", type=Path, help="labelled real crops for drift (held-out cases)")
    parser.add_argument("--split", type=Path, help="split.json of the bundle's training run (excludes its train/val cases)")
    parser.add_argument("--demo", action="store_true", help="also time `karyo-export demo`")
    parser.add_argument("--no-history", action="store_true", help="do not append to the history")
    parser.add_argument("--no-cache", action="store_true", help="re-export seed-dcnn even if out/cache has it")
    parser.add_argument("--export-untrained", choices=["seed-dcnn", "edge"], help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--export-to", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    total = suite.stopwatch()
    from karyo.export.models import available_cores

    threads = args.threads or available_cores()
    if args.export_untrained:
        return export_untrained_child(args.export_untrained, args.export_to, threads, args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "schema": 1, "date": history.utc_now(), "git": history.git_revision(REPO), "mode": "quick" if args.quick else "full",
        "machine": machine_info(), "versions": library_versions(), "threads": threads,
    }
    try:
        import tensorflow as tf

        record["versions"]["tensorflow"] = tf.__version__
    except ImportError:
        pass
    gemm = {"repeats": 5 if args.quick else 10, "max_seconds": 3.0 if args.quick else 8.0}
    say(f"GEMM ceilings with {threads} thread(s)")
    first_peaks = gemm_peaks(threads, **gemm)
    work = Path(tempfile.mkdtemp(prefix="work.", dir=args.out))
    try:
        calibration, source = calibration_samples(work, args.quick)
        record["calibration_source"] = source
        edge_bundle = part_latency(args, work, threads, calibration, record)
        part_cell(args, work, threads, edge_bundle, record)
        part_drift(args, work, threads, edge_bundle, record)
        part_demo(args, work, record)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say("GEMM ceilings again (the best of two runs is kept: the cores are shared)")
    record["hardware"] = best_of(first_peaks, gemm_peaks(threads, **gemm))
    if record.get("latency"):
        macs = {arch: info["macs_per_image"] for arch, info in record["latency"]["models"].items() if info.get("macs_per_image")}
        suite.add_shares(record["latency"]["rows"], macs, record["hardware"])
    record["peak_rss_mb"] = peak_rss_mb()
    record["wall_s"] = total()
    record["figures"] = suite.flatten_figures(record)
    report(record, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
