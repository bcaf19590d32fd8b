"""Latency, throughput and memory of a bundle on this machine, measured the way the scanner PC runs it.

The figures are only worth comparing when they come with the machine and library versions that
produced them, so every result carries both. Timing uses wall-clock percentiles over repeated
calls after a warm-up: the first ONNX Runtime call pays for memory planning and kernel choice,
and a p99 shows the stalls a cytogeneticist actually waits through, which a mean hides.
Only numpy, OpenCV and onnxruntime are used: `karyo bench` runs on the scanner PC itself.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .bundle import Bundle, load_bundle
from .int8_check import int8_overflow
from .preprocess import ImageError, PreprocessSpec, preprocess_path

DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 8, 46, 64)


# --------------------------------------------------------------------------- machine and memory


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MiB; None where the OS will not say."""
    try:
        import resource  # not on Windows

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Linux reports KiB, macOS bytes.
        return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)
    except (ImportError, OSError, AttributeError):
        pass
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return _windows_peak_working_set_mb()


def _windows_peak_working_set_mb() -> float | None:
    if sys.platform != "win32":
        return None
    try:
        import ctypes
        from ctypes import wintypes

        class Counters(ctypes.Structure):
            _fields_ = [
                ("cb", wintypes.DWORD),
                ("PageFaultCount", wintypes.DWORD),
                ("PeakWorkingSetSize", ctypes.c_size_t),
                ("WorkingSetSize", ctypes.c_size_t),
                ("QuotaPeakPagedPoolUsage", ctypes.c_size_t),
                ("QuotaPagedPoolUsage", ctypes.c_size_t),
                ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t),
                ("QuotaNonPagedPoolUsage", ctypes.c_size_t),
                ("PagefileUsage", ctypes.c_size_t),
                ("PeakPagefileUsage", ctypes.c_size_t),
            ]

        counters = Counters()
        counters.cb = ctypes.sizeof(Counters)
        process = ctypes.windll.kernel32.GetCurrentProcess()
        if not ctypes.windll.psapi.GetProcessMemoryInfo(process, ctypes.byref(counters), counters.cb):
            return None
        return round(counters.PeakWorkingSetSize / (1024 * 1024), 1)
    except (OSError, AttributeError, ImportError):
        return None


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        try:
            for line in cpuinfo.read_text(errors="replace").splitlines():
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
    return platform.processor() or platform.machine() or "unknown"


# The widest vector extension first: what decides which kernels ONNX Runtime and TensorFlow pick.
_SIMD_LEVELS: tuple[tuple[str, str], ...] = (
    ("AVX512VNNI", "AVX-512 VNNI"), ("AVX512F", "AVX-512"), ("AVX2", "AVX2"), ("AVX", "AVX"),
    ("SVE", "SVE"), ("ASIMDDP", "NEON dot"), ("ASIMD", "NEON"),
)


def simd_level() -> str:
    """The widest vector extension this CPU offers, as numpy's dispatcher detected it (any OS)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return "unknown"
    return next((name for flag, name in _SIMD_LEVELS if features.get(flag)), "baseline")


def int8_sums() -> str:
    """How this CPU's uint8 x int8 kernels add products: "exact", or "16-bit pairs" (no VNNI).

    Asked of the CPU itself (`karyo.runtime.int8_check`, milliseconds), since numpy does not report
    AVX-VNNI, the 256-bit form desktop CPUs have without AVX-512.
    """
    from . import int8_check  # looked up per call, like int8_overflow's own question, so one answer serves both

    return "16-bit pairs" if int8_check.cpu_overflows_uint8_int8() else "exact"


def machine_info() -> dict[str, Any]:
    """What a latency figure depends on; `key` groups records of the same machine in the history.

    The key names the CPU's vector extensions and how it sums INT8 products besides its model
    name, because a model name alone does not tell CPUs apart: a virtual machine may report no more
    than "AMD EPYC", which covers generations with AVX2 only and with AVX-512 VNNI, and their INT8
    kernels differ (`karyo.runtime.int8_check`).
    """
    cores = os.cpu_count() or 1
    model = cpu_model()
    system = f"{platform.system()} {platform.release()}".strip()
    simd, sums = simd_level(), int8_sums()
    return {
        "cpu": model,
        "cores": cores,
        "simd": simd,
        "int8_sums": sums,
        "system": system,
        "arch": platform.machine(),
        "key": f"{model} x{cores}, {simd}, int8 sums {sums} ({platform.system()} {platform.machine()})",
    }


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            versions["karyo"] = version("karyo")
        except PackageNotFoundError:
            versions["karyo"] = "unknown"
    except ImportError:  # pragma: no cover - python < 3.8
        pass
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        versions["onnxruntime"] = "missing"
    try:
        import cv2

        versions["opencv"] = cv2.__version__
    except ImportError:
        versions["opencv"] = "missing"
    return versions


# --------------------------------------------------------------------------- timing


def time_calls(
    call: Callable[[], Any], iterations: int, warmup: int = 2, max_seconds: float | None = None, min_iterations: int = 3
) -> list[float]:
    """Wall seconds of `iterations` calls after `warmup` untimed ones.

    `max_seconds` stops early (after `min_iterations`) so a 300 px model at batch 64 on two cores
    does not turn a benchmark into an hour; the record says how many calls were timed.
    """
    for _ in range(max(0, warmup)):
        call()
    times: list[float] = []
    started = time.perf_counter()
    for index in range(max(1, iterations)):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        if max_seconds is not None and index + 1 >= min_iterations and time.perf_counter() - started > max_seconds:
            break
    return times


def latency_summary(times_s: Sequence[float], batch_size: int) -> dict[str, Any]:
    """Percentiles of per-call latency plus the per-image cost and throughput they imply (from p50)."""
    ms = np.asarray(times_s, dtype=np.float64) * 1000.0
    p50, p90, p99 = (float(np.percentile(ms, q)) for q in (50, 90, 99))
    return {
        "batch_size": int(batch_size),
        "iterations": int(len(ms)),
        "p50_ms": _sig(p50),
        "p90_ms": _sig(p90),
        "p99_ms": _sig(p99),
        "mean_ms": _sig(float(ms.mean())),
        "min_ms": _sig(float(ms.min())),
        "per_image_ms": _sig(p50 / batch_size),
        "throughput_ips": _sig(batch_size * 1000.0 / p50) if p50 > 0 else None,
    }


def _sig(value: float, digits: int = 5) -> float:
    """Round to significant digits: a 0.01 ms tiny-model call and a 900 ms batch both keep their precision."""
    return float(f"{value:.{digits}g}")


# --------------------------------------------------------------------------- inputs


def random_inputs(spec: PreprocessSpec, count: int, seed: int = 0) -> np.ndarray:
    """Tensors in the value range the preprocess spec produces (a scaled [0, 1] image, normalized)."""
    rng = np.random.default_rng(seed)
    pixels = rng.random((count, *spec.input_shape), dtype=np.float32)
    return ((pixels - np.float32(spec.mean)) / np.float32(spec.std)).astype(np.float32)


def data_inputs(folder: str | Path, spec: PreprocessSpec, count: int) -> np.ndarray:
    """Real crops from a folder (any layout), preprocessed; repeated to fill `count` if there are fewer."""
    from .dataset import iter_images

    tensors: list[np.ndarray] = []
    for path in iter_images(Path(folder)):
        try:
            tensors.append(preprocess_path(path, spec))
        except ImageError:
            continue  # one unreadable crop does not stop a benchmark
        if len(tensors) >= count:
            break
    if not tensors:
        raise ValueError(f"{folder}: no readable images")
    stacked = np.stack(tensors).astype(np.float32)
    repeats = -(-count // len(stacked))
    return np.concatenate([stacked] * repeats)[:count]


# --------------------------------------------------------------------------- the benchmark


def _open_session(model_path: Path, provider: str, threads: int | None) -> tuple[Any, str]:
    from .session import create_session

    return create_session(model_path, provider=provider, threads=threads)


def benchmark_session(
    session: Any,
    inputs: np.ndarray,
    batch_sizes: Iterable[int],
    iterations: int = 20,
    warmup: int = 2,
    max_seconds: float | None = 20.0,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One latency summary per batch size; one `session.run` call per batch, as the classifier does."""
    input_name = session.get_inputs()[0].name
    results = []
    for batch_size in batch_sizes:
        batch = np.ascontiguousarray(inputs[:batch_size])
        if len(batch) < batch_size:
            raise ValueError(f"only {len(batch)} input tensors for batch size {batch_size}")
        if progress:
            progress(f"batch {batch_size}")
        times = time_calls(lambda: session.run(None, {input_name: batch}), iterations, warmup, max_seconds)
        results.append(latency_summary(times, batch_size))
    return results


def benchmark_bundle(
    bundle: str | Path | Bundle,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    precisions: Sequence[str] | None = None,
    provider: str = "auto",
    threads: int | None = None,
    iterations: int = 20,
    warmup: int = 2,
    max_seconds: float | None = 20.0,
    data_dir: str | Path | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Load each precision's model, warm it up and time it at every batch size.

    Returns `{"machine", "versions", "bundle", "settings", "records": [...]}`; one record per
    (precision, batch size) with the provider that really ran, the session load time, the first
    (cold) call and the process's peak resident memory after that precision ran. `warnings` holds
    the line to show when this CPU misreads the bundle's INT8 model (`karyo.runtime.int8_check`);
    its records carry `int8_overflow`.
    """
    loaded = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    chosen = list(precisions) if precisions else loaded.available_precisions
    for name in chosen:
        loaded.model_path(name)  # raises BundleError naming what the bundle has
    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError("batch sizes must be positive integers")
    spec = loaded.spec
    largest = sizes[-1]
    source = "random"
    if data_dir is not None:
        inputs = data_inputs(data_dir, spec, largest)
        source = f"data:{Path(data_dir).name}"
    else:
        inputs = random_inputs(spec, largest, seed)

    records: list[dict[str, Any]] = []
    warnings: list[str] = []
    for name in chosen:
        model_path = loaded.model_path(name)
        if progress:
            progress(f"{name}: loading {model_path.name}")
        t0 = time.perf_counter()
        session, used = _open_session(model_path, provider, threads)
        load_s = time.perf_counter() - t0
        # Timing an INT8 model this CPU misreads is still timing the kernels a 7-bit re-quantization
        # would run (the same ones), so it is timed, but the record says the reads would be wrong.
        overflow = int8_overflow(loaded, used) if name == "int8" else None
        if overflow:
            warnings.append(overflow)
        input_name = session.get_inputs()[0].name
        t0 = time.perf_counter()
        session.run(None, {input_name: inputs[:1]})
        first_ms = (time.perf_counter() - t0) * 1000.0
        say = (lambda text, n=name: progress(f"{n}: {text}")) if progress else None
        summaries = benchmark_session(session, inputs, sizes, iterations, warmup, max_seconds, say)
        peak = peak_rss_mb()
        for summary in summaries:
            records.append(
                {
                    "precision": name,
                    "provider": used,
                    "provider_requested": provider,
                    **summary,
                    "load_s": round(load_s, 4),
                    "first_call_ms": round(first_ms, 3),
                    "peak_rss_mb": peak,
                    "threads": threads,
                    "inputs": source,
                    "model_bytes": model_path.stat().st_size,
                    **({"int8_overflow": True} if overflow else {}),
                }
            )
        del session
    return {
        "machine": machine_info(),
        "versions": library_versions(),
        "bundle": {
            "path": str(loaded.path),
            "labels": loaded.labels.name,
            "classes": len(loaded.labels),
            "input_size": f"{spec.size}x{spec.width}",
            "arch": loaded.manifest.provenance.get("arch"),
        },
        "settings": {
            "batch_sizes": sizes,
            "iterations": iterations,
            "warmup": warmup,
            "max_seconds": max_seconds,
            "threads": threads,
            "provider": provider,
            "inputs": source,
        },
        "records": records,
        "warnings": warnings,
    }


def format_table(records: Sequence[dict[str, Any]]) -> str:
    """A plain fixed-width table, one row per record (what `karyo bench` prints)."""
    columns = [
        ("precision", "precision", "{}"),
        ("provider", "provider", "{}"),
        ("batch", "batch_size", "{}"),
        ("p50 ms", "p50_ms", "{:.2f}"),
        ("p90 ms", "p90_ms", "{:.2f}"),
        ("p99 ms", "p99_ms", "{:.2f}"),
        ("ms/image", "per_image_ms", "{:.3f}"),
        ("images/s", "throughput_ips", "{:.1f}"),
        ("load s", "load_s", "{:.3f}"),
        ("peak MiB", "peak_rss_mb", "{:.0f}"),
    ]
    rows = [[title for title, _, _ in columns]]
    for record in records:
        row = []
        for _, key, fmt in columns:
            value = record.get(key)
            row.append("-" if value is None else fmt.format(value))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = []
    for number, row in enumerate(rows):
        cells = [cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
