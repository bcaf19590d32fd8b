"""Pictures people would rather look at than read, drawn with OpenCV (the runtime has no matplotlib).

A confusion matrix shows at a glance which chromosomes a model mixes up (9 vs 11, 21 vs 22, X vs 7);
a line plot shows how latency grows with batch size. Both write PNGs atomically, so a viewer that
has the file open never sees half a picture.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .bundle import atomic_write_bytes

FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GRID = (215, 215, 215)
# Distinct, colour-blind-friendly line colours (Okabe-Ito), in BGR.
PALETTE = [(178, 114, 0), (0, 94, 213), (115, 158, 0), (167, 121, 204), (233, 180, 86), (66, 228, 240), (0, 0, 0)]


def write_png(image: np.ndarray, path: str | Path) -> Path:
    """Encode and write atomically (temp file in the same folder, then rename)."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed")
    return atomic_write_bytes(path, encoded.tobytes())


def _text_size(text: str, scale: float, thickness: int = 1) -> tuple[int, int]:
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    return width, height + baseline


def _put(image: np.ndarray, text: str, x: int, y: int, scale: float, color=BLACK, thickness: int = 1) -> None:
    cv2.putText(image, text, (int(x), int(y)), FONT, scale, color, thickness, cv2.LINE_AA)


def _heat(value: float) -> tuple[int, int, int]:
    """White (0) to deep blue (1) in BGR: readable when printed in grey too."""
    v = float(np.clip(value, 0.0, 1.0))
    light, dark = np.array([255.0, 255.0, 255.0]), np.array([110.0, 45.0, 8.0])
    return tuple(int(c) for c in light + (dark - light) * v**0.8)  # type: ignore[return-value]


def confusion_matrix_png(matrix: Sequence[Sequence[int]] | np.ndarray, labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Rows = true class, columns = predicted; colour = share of the row, numbers = counts, right = recall."""
    counts = np.asarray(matrix, dtype=np.int64)
    n = len(labels)
    if counts.shape != (n, n):
        raise ValueError(f"matrix shape {counts.shape} does not match {n} labels")
    cell = 34 if n <= 16 else 28
    count_scale = 0.42 if n <= 24 else 0.36
    label_scale = 0.45
    label_width = max(_text_size(str(label), label_scale)[0] for label in labels) if n else 10
    left = label_width + 40
    top = label_width + 70 if title else label_width + 45
    right = 70
    bottom = 20
    width, height = left + n * cell + right, top + n * cell + bottom
    image = np.full((height, width, 3), 255, np.uint8)

    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, np.maximum(rows, 1), dtype=np.float64)
    for i in range(n):
        for j in range(n):
            x0, y0 = left + j * cell, top + i * cell
            cv2.rectangle(image, (x0, y0), (x0 + cell, y0 + cell), _heat(shares[i, j]), -1)
            if counts[i, j]:
                text = str(counts[i, j])
                scale = count_scale if len(text) <= 3 else count_scale * 0.8
                tw, th = _text_size(text, scale)
                color = WHITE if shares[i, j] > 0.55 else BLACK
                _put(image, text, x0 + (cell - tw) // 2, y0 + (cell + th) // 2 - 2, scale, color)
    for k in range(n + 1):  # grid, with a darker diagonal frame to guide the eye
        cv2.line(image, (left + k * cell, top), (left + k * cell, top + n * cell), GRID, 1)
        cv2.line(image, (left, top + k * cell), (left + n * cell, top + k * cell), GRID, 1)
    for k in range(n):
        cv2.rectangle(image, (left + k * cell, top + k * cell), (left + (k + 1) * cell, top + (k + 1) * cell), (60, 60, 60), 1)

    for i, label in enumerate(labels):  # row labels, right-aligned
        tw, th = _text_size(str(label), label_scale)
        _put(image, str(label), left - 8 - tw, top + i * cell + (cell + th) // 2 - 2, label_scale)
        recall = f"{100.0 * shares[i, i]:.0f}%" if rows[i, 0] else "-"
        _put(image, recall, left + n * cell + 8, top + i * cell + (cell + th) // 2 - 2, 0.4, (80, 80, 80))
    # column labels: drawn horizontally on a strip, rotated to read bottom-to-top, ending at the matrix
    strip = np.full((max(cell * n, 1), label_width + 10, 3), 255, np.uint8)
    for j, label in enumerate(labels):
        _, th = _text_size(str(label), label_scale)
        _put(strip, str(label), 5, j * cell + (cell + th) // 2 - 2, label_scale)
    rotated = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
    y0 = top - 4 - rotated.shape[0]
    image[y0 : y0 + rotated.shape[0], left : left + rotated.shape[1]] = rotated
    _put(image, "true", 8, top - 10, 0.45, (90, 90, 90))
    _put(image, "predicted", left, max(y0 - 8, 14), 0.45, (90, 90, 90))
    _put(image, "recall", left + n * cell + 8, top - 10, 0.4, (90, 90, 90))
    if title:
        _put(image, title, 10, 24, 0.6, BLACK, 1)
    return write_png(image, path)


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    ticks = [round(start, 10)]
    while ticks[-1] < high - step * 1e-9:  # the last tick covers the largest value
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _format(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:.3g}"


def line_plot_png(
    series: dict[str, list[tuple[float, float]]], path: str | Path, title: str = "", xlabel: str = "", ylabel: str = ""
) -> Path:
    """One line per series with point markers, axes with round-number ticks, and a legend."""
    width, height = 820, 500
    left, right, top, bottom = 80, 30, 50, 60
    image = np.full((height, width, 3), 255, np.uint8)
    points = [(float(x), float(y)) for values in series.values() for x, y in values]
    points = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    xs, ys = [p[0] for p in points] or [0.0, 1.0], [p[1] for p in points] or [0.0, 1.0]
    xticks = _nice_ticks(min(xs), max(xs))
    yticks = _nice_ticks(min(0.0, min(ys)), max(ys))
    x_low, x_high = xticks[0], xticks[-1] if xticks[-1] > xticks[0] else xticks[0] + 1
    y_low, y_high = yticks[0], yticks[-1] if yticks[-1] > yticks[0] else yticks[0] + 1
    plot_w, plot_h = width - left - right, height - top - bottom

    def to_pixel(x: float, y: float) -> tuple[int, int]:
        return (
            int(round(left + (x - x_low) / (x_high - x_low) * plot_w)),
            int(round(top + plot_h - (y - y_low) / (y_high - y_low) * plot_h)),
        )

    for tick in yticks:
        _, py = to_pixel(x_low, tick)
        cv2.line(image, (left, py), (left + plot_w, py), GRID, 1)
        text = _format(tick)
        tw, th = _text_size(text, 0.4)
        _put(image, text, left - 8 - tw, py + th // 2 - 2, 0.4, (60, 60, 60))
    for tick in xticks:
        px, _ = to_pixel(tick, y_low)
        cv2.line(image, (px, top + plot_h), (px, top + plot_h + 5), BLACK, 1)
        text = _format(tick)
        tw, th = _text_size(text, 0.4)
        _put(image, text, px - tw // 2, top + plot_h + 8 + th, 0.4, (60, 60, 60))
    cv2.rectangle(image, (left, top), (left + plot_w, top + plot_h), BLACK, 1)

    for index, (name, values) in enumerate(series.items()):
        color = PALETTE[index % len(PALETTE)]
        pixels = [to_pixel(x, y) for x, y in sorted(values) if math.isfinite(x) and math.isfinite(y)]
        if len(pixels) > 1:
            cv2.polylines(image, [np.array(pixels, np.int32)], False, color, 2, cv2.LINE_AA)
        for px, py in pixels:
            cv2.circle(image, (px, py), 4, color, -1, cv2.LINE_AA)
        ly = top + 18 + index * 20  # legend, top-left inside the axes
        cv2.line(image, (left + 12, ly - 4), (left + 36, ly - 4), color, 2, cv2.LINE_AA)
        _put(image, str(name), left + 42, ly, 0.45)

    if title:
        _put(image, title, left, 30, 0.6)
    if xlabel:
        tw, _ = _text_size(xlabel, 0.45)
        _put(image, xlabel, left + (plot_w - tw) // 2, height - 15, 0.45)
    if ylabel:
        tw, th = _text_size(ylabel, 0.45)
        strip = np.full((th + 6, tw + 6, 3), 255, np.uint8)
        _put(strip, ylabel, 3, th, 0.45)
        rotated = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
        y0 = top + (plot_h - rotated.shape[0]) // 2
        if y0 >= 0 and rotated.shape[0] <= height:
            image[y0 : y0 + rotated.shape[0], 8 : 8 + rotated.shape[1]] = rotated
    return write_png(image, path)
