"""Lay one cell's crops out as a picture, to look at synthetic cells next to real ones."""

from __future__ import annotations

import cv2
import numpy as np


def cell_sheet(crops: list[tuple[str, np.ndarray]], per_row: int = 12, gap: int = 6, zoom: int = 2,
               title: str = "") -> np.ndarray:
    """Crops in rows, bottoms aligned (as in a karyogram), each labeled underneath; uint8 gray."""
    rows = [crops[i:i + per_row] for i in range(0, len(crops), per_row)] or [[]]
    label_h = 12
    heights = [max((c.shape[0] for _, c in row), default=1) + label_h for row in rows]
    width = max(sum(c.shape[1] + gap for _, c in row) for row in rows) + gap
    top = 16 if title else 0
    sheet = np.full((top + sum(heights) + gap * (len(rows) + 1), max(width, 120)), 255, np.uint8)
    y = top + gap
    for row, height in zip(rows, heights):
        x = gap
        for label, crop in row:
            h, w = crop.shape[:2]
            sheet[y + height - label_h - h:y + height - label_h, x:x + w] = crop
            cv2.putText(sheet, label[:6], (x, y + height - 2), cv2.FONT_HERSHEY_PLAIN, 0.6, 90, 1, cv2.LINE_AA)
            x += w + gap
        y += height + gap
    if title:
        cv2.putText(sheet, title, (gap, 12), cv2.FONT_HERSHEY_PLAIN, 0.8, 0, 1, cv2.LINE_AA)
    return cv2.resize(sheet, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST) if zoom != 1 else sheet


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 20) -> np.ndarray:
    height = max(left.shape[0], right.shape[0])
    out = np.full((height, left.shape[1] + gap + right.shape[1]), 255, np.uint8)
    out[:left.shape[0], :left.shape[1]] = left
    out[:right.shape[0], left.shape[1] + gap:] = right
    out[:, left.shape[1] + gap // 2] = 180
    return out
