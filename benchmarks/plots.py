"""Benchmark pictures: latency per batch size and precision, and drift figures over the history.

Uses `karyo.runtime.plots.line_plot_png` when the runtime has it; otherwise a small OpenCV line
plot of its own (no matplotlib: the project draws every picture with OpenCV).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from karyo.runtime.plots import write_png

Series = dict[str, list[tuple[float, float]]]

_COLORS = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
           (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]


def line_plot(
    series: Series, path: Path, title: str, xlabel: str, ylabel: str, log_y: bool = False,
    y_range: tuple[float, float] | None = None,
) -> Path:
    """Write a PNG with the legend outside the plot area (benchmark plots carry up to a dozen lines).

    `karyo.runtime.plots.line_plot_png` draws its legend inside the axes and has no log axis, which
    the latency plot needs (0.3 ms to 100 ms per image), so the benchmark keeps its own drawer.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_line_plot(series, path, title, xlabel, ylabel, log_y, y_range)
    return path


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    return [low + (high - low) * i / (count - 1) for i in range(count)]


def draw_line_plot(
    series: Series, path: Path, title: str, xlabel: str, ylabel: str, log_y: bool = False,
    y_range: tuple[float, float] | None = None,
) -> None:
    width, height = 960, 560
    left, right, top, bottom = 90, 290, 50, 70
    image = np.full((height, width, 3), 255, np.uint8)
    points = [(x, y) for values in series.values() for x, y in values if y is not None and (y > 0 or not log_y)]
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, title, (left, 22), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    if not points:
        cv2.putText(image, "no data", (width // 2 - 40, height // 2), font, 0.7, (0, 0, 0), 1, cv2.LINE_AA)
        write_png(image, path)
        return
    transform = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    xs = [p[0] for p in points]
    ys = [transform(p[1]) for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    pad = (y1 - y0) * 0.08 or (abs(y0) * 0.1 or 1.0)
    y0, y1 = y0 - pad, y1 + pad
    if y_range is not None and not log_y:  # e.g. fractions: keep the axis at 0..1 so runs compare by eye
        y0, y1 = min(y_range[0], y0 + pad), max(y_range[1], y1 - pad)
    plot_w, plot_h = width - left - right, height - top - bottom

    def to_px(x: float, y: float) -> tuple[int, int]:
        return (int(left + (x - x0) / (x1 - x0) * plot_w), int(top + plot_h - (transform(y) - y0) / (y1 - y0) * plot_h))

    cv2.rectangle(image, (left, top), (left + plot_w, top + plot_h), (0, 0, 0), 1)
    for tick in _ticks(y0, y1):
        py = int(top + plot_h - (tick - y0) / (y1 - y0) * plot_h)
        cv2.line(image, (left, py), (left + plot_w, py), (225, 225, 225), 1)
        label = f"{10 ** tick:.3g}" if log_y else f"{tick:.3g}"
        cv2.putText(image, label, (8, py + 4), font, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    for tick in sorted(set(xs)) if len(set(xs)) <= 12 else _ticks(x0, x1):
        px = int(left + (tick - x0) / (x1 - x0) * plot_w)
        cv2.line(image, (px, top + plot_h), (px, top + plot_h + 5), (0, 0, 0), 1)
        cv2.putText(image, f"{tick:g}", (px - 10, top + plot_h + 20), font, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(image, xlabel, (left + plot_w // 2 - 60, height - 20), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, ylabel + (" (log)" if log_y else ""), (8, top - 8), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for index, (name, values) in enumerate(series.items()):
        color = _COLORS[index % len(_COLORS)]
        kept = sorted((x, y) for x, y in values if y is not None and (y > 0 or not log_y))
        pixels = [to_px(x, y) for x, y in kept]
        for a, b in zip(pixels, pixels[1:]):
            cv2.line(image, a, b, color, 2, cv2.LINE_AA)
        for p in pixels:
            cv2.circle(image, p, 4, color, -1, cv2.LINE_AA)
        ly = top + 10 + index * 20
        cv2.line(image, (width - right + 15, ly), (width - right + 40, ly), color, 2)
        cv2.putText(image, name[:38], (width - right + 46, ly + 4), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    write_png(image, path)


def latency_series(latency_rows: Sequence[dict[str, Any]]) -> Series:
    """Per-image p50 latency by batch size, one line per (arch, engine/precision)."""
    series: Series = {}
    for row in latency_rows:
        name = f"{row['arch']} {row['precision']}"
        series.setdefault(name, []).append((float(row["batch_size"]), float(row["per_image_ms"])))
    return series


def drift_history_series(history: Sequence[dict[str, Any]], machine_key: str | None = None) -> Series:
    """FP32 and INT8 accuracy and INT8 agreement with FP32 over run number, per data source and bundle.

    FP32 agreement is 1 by definition and FP16 tracks FP32 on a CPU, so they are left out to keep
    the picture readable; the history file has them all.
    """
    short = {"accuracy": "acc", "agreement_with_fp32": "agree"}
    wanted = {("fp32", "accuracy"), ("int8", "accuracy"), ("int8", "agreement_with_fp32")}
    series: Series = {}
    runs = [r for r in history if machine_key is None or r.get("machine", {}).get("key") == machine_key]
    for number, record in enumerate(runs, start=1):
        for name, value in (record.get("figures") or {}).items():
            parts = name.split(".")
            if len(parts) != 5 or parts[0] != "drift" or not isinstance(value, (int, float)):
                continue
            _, source, bundle, precision, leaf = parts
            if (precision, leaf) in wanted:
                label = f"{source[:5]} {bundle} {precision} {short[leaf]}"
                series.setdefault(label, []).append((float(number), float(value)))
    return series
