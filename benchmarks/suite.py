"""The benchmark's measurements that need no TensorFlow: ONNX latency with its hardware share,
one cell end to end, and accuracy drift per precision. `run.py` adds the Keras side and the history.

Everything here takes a bundle folder, so the same functions run on the tiny models of
`tests/test_bench.py` and on the real `edge` / `seed-dcnn` bundles.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from karyo.runtime.bench import benchmark_bundle, latency_summary, time_calls
from karyo.runtime.bundle import load_bundle
from karyo.runtime.dataset import Sample
from karyo.runtime.orientation import DEFAULT_ORIENTATION, half_turn, orientation_hint, read_oriented
from karyo.runtime.preprocess import ImageError, preprocess_path

from hardware import achieved_share, count_macs_onnx

Progress = Callable[[str], None] | None


# --------------------------------------------------------------------------- latency


def onnx_latency(
    bundle_path: Path,
    arch: str,
    batch_sizes: Sequence[int],
    threads: int,
    iterations: int,
    max_seconds: float,
    progress: Progress = None,
) -> dict[str, Any]:
    """ONNX latency rows for every precision of a bundle, and the model's MACs per image."""
    bundle = load_bundle(bundle_path)
    macs = count_macs_onnx(bundle.model_path("fp32"))
    result = benchmark_bundle(
        bundle, batch_sizes, provider="cpu", threads=threads, iterations=iterations,
        max_seconds=max_seconds, progress=progress,
    )
    rows = [{"arch": arch, "engine": "onnxruntime", **record} for record in result["records"]]
    return {"macs_per_image": macs["macs"], "macs_unknown_nodes": macs["unknown"], "rows": rows, "input_size": f"{bundle.spec.size}x{bundle.spec.width}"}


def ceilings(peaks: dict[str, Any]) -> dict[str, float | None]:
    """The float ceiling is the best float GEMM measured (numpy or ONNX Runtime); int8 is ORT's MatMulInteger."""
    floats = [v for v in (peaks.get("numpy_fp32_gflops"), peaks.get("ort_fp32_gflops")) if v]
    return {"fp32": max(floats) if floats else None, "int8": peaks.get("ort_int8_gops")}


def add_shares(rows: list[dict[str, Any]], macs_per_image: dict[str, int], peaks: dict[str, Any]) -> None:
    """Achieved GFLOP/s (2 per MAC) and the share of the ceiling, for every row of a known arch (in place).

    FP32, FP16 (a CPU has no FP16 GEMM: ONNX Runtime computes it in float) and Keras rows are set
    against the float ceiling, INT8 rows against the int8 ceiling.
    """
    limit = ceilings(peaks)
    for row in rows:
        macs = macs_per_image.get(row["arch"])
        if not macs:
            continue
        kind = "int8" if row["precision"] == "int8" else "fp32"
        row.update(achieved_share(macs, row["batch_size"], row["p50_ms"], limit[kind]))
        row["ceiling"] = kind


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """ours / Keras for every ONNX row, against the same arch and batch size's Keras figures (in place)."""
    keras = {(r["arch"], r["precision"], r["batch_size"]): r["p50_ms"] for r in rows if r["engine"] == "keras"}
    for row in rows:
        if row["engine"] != "onnxruntime":
            continue
        for method in ("predict", "call"):
            reference = keras.get((row["arch"], f"keras-{method}", row["batch_size"]))
            row[f"ratio_to_keras_{method}"] = float(f"{row['p50_ms'] / reference:.4g}") if reference else None


def format_latency_table(rows: Sequence[dict[str, Any]]) -> str:
    header = ["arch", "engine/precision", "batch", "p50 ms", "p90 ms", "p99 ms", "ms/image", "img/s", "/predict", "/call", "GFLOP/s", "% peak"]
    table = [header]
    for r in rows:
        share = r.get("share_of_peak")
        table.append([
            r["arch"], r["precision"], str(r["batch_size"]), f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}",
            f"{r['per_image_ms']:.3f}", f"{r['throughput_ips']:.1f}" if r.get("throughput_ips") else "-",
            _ratio(r.get("ratio_to_keras_predict")), _ratio(r.get("ratio_to_keras_call")),
            f"{r['achieved_gflops']:.1f}" if r.get("achieved_gflops") else "-",
            f"{share * 100:.1f}" if share else "-",
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return f"{value:.3g}x" if value else "-"


# --------------------------------------------------------------------------- one cell


def _karyotype_caller() -> tuple[Callable[..., Any] | None, str]:
    """The runtime's karyotype assembly, if present (it is written alongside this benchmark)."""
    try:
        from karyo.runtime import karyotype  # type: ignore[attr-defined]
    except ImportError as exc:
        return None, f"karyo.runtime.karyotype not available ({exc})"
    for name in ("karyotype_cell", "assemble_karyotype", "karyotype_from_probabilities"):  # (probs, LabelScheme)
        function = getattr(karyotype, name, None)
        if callable(function):
            return function, name
    return None, "karyo.runtime.karyotype has no assembly function this benchmark knows"


def cell_latency(
    bundle_path: Path,
    crop_paths: Sequence[Path],
    precision: str = "int8",
    threads: int | None = None,
    iterations: int = 20,
    max_seconds: float = 20.0,
    orientation: str = DEFAULT_ORIENTATION,
) -> dict[str, Any]:
    """One cell from disk to karyotype: decode + preprocess every file, one batch inference, assembly.

    Each stage is timed on its own over the same repetitions, and the whole chain end to end, so a
    regression points at its stage. `orientation` "any" reads the batch as given and turned half a
    circle (`karyo ... --orientation any`), so its inference stage is the cost of the second pass.
    Read p arm up, the chain includes what `karyo karyotype` does then (`Classifier.predict_cell`):
    the check whether the cell seems not to stand p arm up (stage `orientation_check`), which reads
    an unsure cell's tensors again turned half a circle and costs a sure cell next to nothing.
    """
    from karyo.runtime.session import create_session

    bundle = load_bundle(bundle_path)
    precision = precision if precision in bundle.available_precisions else bundle.available_precisions[-1]
    spec = bundle.spec
    session, provider = create_session(bundle.model_path(precision), provider="cpu", threads=threads)
    input_name = session.get_inputs()[0].name
    assemble, assemble_name = _karyotype_caller()
    labels = bundle.labels

    def load() -> np.ndarray:
        tensors = []
        for path in crop_paths:
            try:
                tensors.append(preprocess_path(path, spec))
            except ImageError:
                continue
        return np.stack(tensors)

    def infer(batch: np.ndarray) -> np.ndarray:
        return read_oriented(lambda x: session.run(None, {input_name: x})[0], batch, orientation)[0]

    def build(probs: np.ndarray) -> Any:
        return assemble(probs, labels) if assemble is not None else None

    def check(batch: np.ndarray, probs: np.ndarray) -> str | None:
        if orientation != "p-arm-up":
            return None
        return orientation_hint(probs, lambda: session.run(None, {input_name: half_turn(batch)})[0])

    def chain() -> Any:
        batch = load()
        probs = infer(batch)
        check(batch, probs)
        return build(probs)

    batch = load()
    probs = infer(batch)
    hint = check(batch, probs)
    assembly_error = call = None
    if assemble is not None:
        try:
            called = build(probs)
            call = getattr(called, "karyotype", None) or str(called)[:80]
        except Exception as exc:  # noqa: BLE001 - an API mismatch must not hide the other stages
            assembly_error = f"{assemble_name}: {type(exc).__name__}: {exc}"[:300]
            assemble = None

    stages = {
        "decode_preprocess": latency_summary(time_calls(load, iterations, 1, max_seconds), 1),
        "inference": latency_summary(time_calls(lambda: infer(batch), iterations, 1, max_seconds), 1),
    }
    if orientation == "p-arm-up":
        stages["orientation_check"] = latency_summary(time_calls(lambda: check(batch, probs), iterations, 1, max_seconds), 1)
    if assemble is not None:
        stages["assembly"] = latency_summary(time_calls(lambda: build(probs), iterations, 1, max_seconds), 1)
    end_to_end = latency_summary(time_calls(chain, iterations, 1, max_seconds), 1)
    product = product_cell_latency(bundle_path, crop_paths, precision, threads, iterations, max_seconds, orientation)
    return {
        "precision": precision,
        "provider": provider,
        "orientation": orientation,
        "crops": int(len(batch)),
        "input_size": f"{spec.size}x{spec.width}",
        "threads": threads,
        "stages_p50_ms": {name: s["p50_ms"] for name, s in stages.items()},
        "end_to_end": {k: end_to_end[k] for k in ("p50_ms", "p90_ms", "p99_ms", "iterations")},
        "assembly": assemble_name if assemble is not None else None,
        "karyotype": call,
        "orientation_hint": hint,
        "assembly_skipped": None if assemble is not None else (assembly_error or assemble_name),
        "goal_ms": 50.0,
        "meets_goal": end_to_end["p50_ms"] < 50.0,
        "product": product,
    }


def product_cell_latency(
    bundle_path: Path,
    crop_paths: Sequence[Path],
    precision: str,
    threads: int | None,
    iterations: int,
    max_seconds: float,
    orientation: str = DEFAULT_ORIENTATION,
) -> dict[str, Any]:
    """The same cell through the product's own path, `Karyotyper.read_cell`: from the files (what
    `karyo karyotype` runs per cell) and from decoded arrays in memory (a scanner application that
    cut the crops itself, so no file is read). Beside the staged chain above it also measures each
    crop's size in its cell, weighs in the bundle's size prior and decodes on the classifier's pool."""
    import cv2

    from karyo.runtime.karyotyper import Karyotyper

    arrays = [image for image in (cv2.imread(str(path), cv2.IMREAD_UNCHANGED) for path in crop_paths) if image is not None]
    with Karyotyper(bundle_path, precision=precision, provider="cpu", threads=threads, orientation=orientation) as karyotyper:
        files = latency_summary(time_calls(lambda: karyotyper.read_cell(crop_paths), iterations, 1, max_seconds), 1)
        in_memory = latency_summary(time_calls(lambda: karyotyper.read_cell(arrays), iterations, 1, max_seconds), 1)
        cell = karyotyper.read_cell(arrays)
        workers = karyotyper.classifier.workers
    return {
        "files_p50_ms": files["p50_ms"],
        "arrays_p50_ms": in_memory["p50_ms"],
        "iterations": files["iterations"],
        "decode_workers": workers,
        "karyotype": cell.karyotype,
        "unreadable": len(cell.errors),
        "meets_goal": files["p50_ms"] < 50.0,
    }


# --------------------------------------------------------------------------- drift


def precision_drift(bundle_path: Path, samples: Sequence[Sample], threads: int | None = None, progress: Progress = None) -> dict[str, Any]:
    """Accuracy of every precision and its agreement with FP32 on labelled crops (CPU, batch 64).

    This is `karyo evaluate` itself (`evaluate_bundle`), so the benchmark's drift figures are the
    ones a lab would get. Crops whose label is not in the scheme, or that cannot be read, are
    counted and skipped.
    """
    from karyo.runtime.evaluate import evaluate_bundle

    if progress:
        progress(f"drift: every precision of {Path(bundle_path).name} on {len(samples)} crops")
    result = evaluate_bundle(bundle_path, list(samples), provider="cpu", threads=threads)
    skipped = sum(result.skipped_labels.values()) + len(result.unreadable)
    if not result.samples:
        return {"n": 0, "skipped": skipped, "precisions": {}}
    figures: dict[str, Any] = {}
    for precision, report in result.reports.items():
        if precision in result.drift:
            metrics = result.drift[precision]
            figures[precision] = {k: metrics[k] for k in ("accuracy", "agreement_with_fp32", "kl_to_fp32", "max_prob_diff")}
        elif precision == "fp32":
            figures[precision] = {"accuracy": report["accuracy"], "agreement_with_fp32": 1.0, "kl_to_fp32": 0.0,
                                  "max_prob_diff": 0.0}
        else:
            figures[precision] = {"accuracy": report["accuracy"]}
    return {"n": len(result.samples), "skipped": skipped, "precisions": figures}


def limit_samples(samples: Sequence[Sample], limit: int, seed: int = 0) -> list[Sample]:
    """A reproducible subset of at most `limit` samples, whole cells kept together."""
    if len(samples) <= limit:
        return list(samples)
    cells: dict[str, list[Sample]] = {}
    for sample in samples:
        cells.setdefault(sample.cell_key, []).append(sample)
    keys = sorted(cells)
    np.random.default_rng(seed).shuffle(keys)
    chosen: list[Sample] = []
    for key in keys:
        if len(chosen) + len(cells[key]) <= limit:
            chosen.extend(cells[key])
    return chosen or cells[keys[0]][:limit]  # one cell larger than the limit: cut it


# --------------------------------------------------------------------------- figures for the history


def flatten_figures(record: dict[str, Any]) -> dict[str, float]:
    """The comparable numbers of a run, as `section.name...leaf` -> value (what the history compares)."""
    figures: dict[str, float] = {}
    for row in record.get("latency", {}).get("rows", []):
        key = f"latency.{row['arch']}.{row['precision']}.b{row['batch_size']}"
        figures[f"{key}.p50_ms"] = row["p50_ms"]
        figures[f"{key}.p99_ms"] = row["p99_ms"]
    for name, value in (record.get("hardware") or {}).items():
        if isinstance(value, (int, float)) and (name.endswith("gflops") or name.endswith("gops")):
            figures[f"hardware.{name}"] = value
    for section in ("cell", "cell_any"):  # cell_any: the same cell read either way up
        cell = record.get(section) or {}
        if cell.get("end_to_end"):
            figures[f"{section}.end_to_end.p50_ms"] = cell["end_to_end"]["p50_ms"]
            for stage, value in cell.get("stages_p50_ms", {}).items():
                figures[f"{section}.{stage}.p50_ms"] = value
    for source, section in (record.get("drift") or {}).items():
        for bundle_name, result in (section or {}).items():
            if not isinstance(result, dict):
                continue
            for precision, metrics in (result.get("precisions") or {}).items():
                for leaf in ("accuracy", "agreement_with_fp32"):
                    if isinstance(metrics.get(leaf), (int, float)):
                        figures[f"drift.{source}.{bundle_name}.{precision}.{leaf}"] = metrics[leaf]
    demo = record.get("demo") or {}
    if isinstance(demo.get("wall_s"), (int, float)):
        figures["demo.wall_s"] = demo["wall_s"]
    return figures


def stopwatch() -> Callable[[], float]:
    started = time.perf_counter()
    return lambda: round(time.perf_counter() - started, 2)
