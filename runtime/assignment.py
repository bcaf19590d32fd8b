"""Exact rectangular min-cost assignment (shortest augmenting paths, Jonker-Volgenant style).

Karyotype assembly needs the jointly best labelling of one cell's crops, which is a min-cost
bipartite matching of crops to chromosome "slots". scipy is not a runtime dependency of the
scanner PC, so this is a small numpy implementation of the same algorithm scipy uses
(Crouse 2016: Dijkstra on reduced costs with dual potentials, one augmentation per row).

Speed comes from a warm start: most crops take their cheapest slot outright (the greedy step
keeps the duals feasible), so only the few crops that compete for a slot run Dijkstra. A
46-crop x ~100-slot cell typically needs a handful of augmentations of a few vectorized steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class AssignmentError(ValueError):
    """The cost matrix cannot be assigned (more rows than columns, or not finite)."""


@dataclass(frozen=True)
class AssignmentState:
    """An assignment with dual potentials: a solver result, or a guess to start from.

    `col4row[i]` is row i's column (-1: unassigned); `v` the column potentials; `u` the row
    potentials, or None in a guess (they are derived from `v`).
    """

    col4row: np.ndarray
    u: np.ndarray | None
    v: np.ndarray


def solve_assignment(cost: np.ndarray) -> np.ndarray:
    """Column index for every row of `cost` (rows <= columns) minimizing the summed cost.

    Every row is assigned to a distinct column; columns may stay unused. Costs may be negative.
    """
    return solve_assignment_state(cost).col4row


def solve_assignment_state(cost: np.ndarray, warm: AssignmentState | None = None) -> AssignmentState:
    """Like :func:`solve_assignment`, keeping the duals; `warm` starts from an earlier optimum or a guess.

    Any `warm` is safe: it is repaired into a dual-feasible partial assignment (rows it cannot
    keep are freed and augmented), so the result is exact whatever the guess; a good guess only
    saves augmentations. Good guesses: the optimum of a matrix whose columns since became dearer
    by the same amount for every row (their potentials absorb the change), or a structural guess
    with potentials that price crowded columns (see ``karyo.runtime.assembly``).
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise AssignmentError(f"cost matrix must be 2-D, got shape {cost.shape}")
    n_rows, n_cols = cost.shape
    if n_rows > n_cols:
        raise AssignmentError(f"{n_rows} rows cannot be assigned to {n_cols} columns")
    if n_rows == 0:
        return AssignmentState(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(n_cols))
    if not np.all(np.isfinite(cost)):
        raise AssignmentError("cost matrix holds NaN or infinite values")
    started = _warm_start(cost, warm) if warm is not None else None
    col4row, row4col, u, v = started if started is not None else _cold_start(cost)
    for row in np.flatnonzero(col4row < 0):
        _augment(cost, int(row), u, v, col4row, row4col)
    return AssignmentState(col4row, u, v)


def _cold_start(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """With v = 0 and u_i = min_j c_ij every reduced cost is >= 0, so any row given a free column
    that attains its minimum is a dual-feasible partial solution; the rest is left to augment."""
    n_rows, n_cols = cost.shape
    u = cost.min(axis=1)
    rows, cols = np.nonzero(cost <= u[:, None])
    owner = [-1] * n_cols
    chosen = [-1] * n_rows
    for row, col in zip(rows.tolist(), cols.tolist()):
        if chosen[row] < 0 and owner[col] < 0:
            chosen[row] = col
            owner[col] = row
    return np.array(chosen, dtype=np.int64), np.array(owner, dtype=np.int64), u, np.zeros(n_cols)


def _warm_start(cost: np.ndarray, warm: AssignmentState) -> tuple[np.ndarray, ...] | None:
    """Repair `warm` into what the augmentation needs: reduced costs >= 0, matched edges tight,
    v <= 0 on used columns and v = 0 on unused ones (so the final matching is optimal)."""
    n_rows, n_cols = cost.shape
    if warm.col4row.shape != (n_rows,) or warm.v.shape != (n_cols,):
        return None
    col4row = np.where((warm.col4row >= 0) & (warm.col4row < n_cols), warm.col4row, -1).astype(np.int64)
    claimed = col4row[col4row >= 0]
    if len(np.unique(claimed)) != len(claimed):
        return None
    v = np.minimum(np.asarray(warm.v, dtype=np.float64), 0.0)
    if warm.u is not None and warm.u.shape == (n_rows,):
        rows = np.flatnonzero(col4row >= 0)  # columns that got dearer keep their rows tight if they can
        v[col4row[rows]] = np.minimum(cost[rows, col4row[rows]] - warm.u[rows], 0.0)
    for _ in range(n_cols + 1):
        u = (cost - v[None, :]).min(axis=1)
        rows = np.flatnonzero(col4row >= 0)
        slack = cost[rows, col4row[rows]] - u[rows] - v[col4row[rows]]
        col4row[rows[slack > 1e-9]] = -1
        used = np.zeros(n_cols, dtype=bool)
        used[col4row[col4row >= 0]] = True
        stale = ~used & (v < 0)
        if not stale.any():
            break
        v[stale] = 0.0
    row4col = np.full(n_cols, -1, dtype=np.int64)
    matched = np.flatnonzero(col4row >= 0)
    row4col[col4row[matched]] = matched
    return col4row, row4col, u, v


def _augment(
    cost: np.ndarray,
    start: int,
    u: np.ndarray,
    v: np.ndarray,
    col4row: np.ndarray,
    row4col: np.ndarray,
) -> None:
    """Dijkstra from the free row `start` to the nearest free column, then flip the path."""
    n_cols = cost.shape[1]
    shortest = np.full(n_cols, np.inf)
    path = np.full(n_cols, -1, dtype=np.int64)
    scanned_cols = np.zeros(n_cols, dtype=bool)
    hidden = np.zeros(n_cols)  # +inf on scanned columns, so argmin only sees the rest
    free_cols = np.flatnonzero(row4col < 0)
    scanned_rows = [start]
    row = start
    min_val = 0.0
    reduced = np.empty(n_cols)
    better = np.empty(n_cols, dtype=bool)
    while True:
        np.subtract(cost[row], v, out=reduced)
        reduced += min_val - u[row]
        np.less(reduced, shortest, out=better)
        better &= ~scanned_cols
        np.copyto(shortest, reduced, where=better)
        np.copyto(path, row, where=better)
        visible = shortest + hidden
        col = int(visible.argmin())
        min_val = float(visible[col])
        if not np.isfinite(min_val):
            raise AssignmentError("no augmenting path (infeasible cost matrix)")
        if row4col[col] >= 0:
            # Prefer a free column among equally short ones: it ends the search now.
            at_free = visible[free_cols]
            best_free = int(at_free.argmin())
            if at_free[best_free] <= min_val:
                col = int(free_cols[best_free])
        if row4col[col] < 0:
            sink = col
            break
        scanned_cols[col] = True
        hidden[col] = np.inf
        row = int(row4col[col])
        scanned_rows.append(row)
    # Dual update keeps reduced costs >= 0 and 0 on the matched edges.
    u[start] += min_val
    for other in scanned_rows[1:]:
        u[other] += min_val - shortest[col4row[other]]
    v[scanned_cols] -= min_val - shortest[scanned_cols]
    col = sink
    while True:
        row = int(path[col])
        row4col[col] = row
        col4row[row], col = col, int(col4row[row])
        if row == start:
            break
