"""The benchmark history: one JSON record per run in `benchmarks/history.jsonl`, compared run to run.

A figure only means something next to the same figure from an earlier run on the same machine,
so each run is compared with the previous record whose machine key matches, and any figure more
than 10% worse is flagged. Which way is worse depends on the figure: a name ending in `_ms` or
`_s` is a time (higher is worse); accuracy, agreement, throughput and GEMM peaks are rates
(lower is worse); anything else is shown but never flagged.
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from karyo.runtime.bundle import atomic_write_text

HISTORY_FILE = Path(__file__).resolve().parent / "history.jsonl"
THRESHOLD = 0.10
_HIGHER_IS_BETTER = ("accuracy", "agreement", "throughput", "gflops", "gops")


def direction(figure: str) -> str | None:
    """'lower' if smaller is better, 'higher' if larger is better, None if the figure is not judged."""
    leaf = figure.rsplit(".", 1)[-1]
    if leaf.endswith("_ms") or leaf.endswith("_s"):
        return "lower"
    if any(word in leaf for word in _HIGHER_IS_BETTER):
        return "higher"
    return None


def git_revision(root: Path | None = None) -> dict[str, Any]:
    root = root or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root, capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip()
        )
        return {"sha": sha, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def load_history(path: Path = HISTORY_FILE) -> list[dict[str, Any]]:
    """All records, oldest first; a corrupt line is skipped rather than losing the whole history."""
    if not Path(path).is_file():
        return []
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def append_record(record: dict[str, Any], path: Path = HISTORY_FILE) -> None:
    """Append one record atomically: the whole file is rewritten to a temp sibling and renamed over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    if existing and not existing.endswith("\n"):
        existing += "\n"
    text = existing + json.dumps(_finite(record), sort_keys=True, allow_nan=False) + "\n"
    atomic_write_text(path, text)


def _finite(value: Any) -> Any:
    """NaN/inf become null: JSON has no spelling for them and one would make the line unreadable."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def previous_on_machine(history: Iterable[dict[str, Any]], machine_key: str, mode: str | None = None) -> dict[str, Any] | None:
    """The latest earlier record from the same machine and mode (quick/full).

    Modes are never mixed: a quick run times fewer calls and measures drift on fewer crops, so its
    figures differ from a full run's for reasons that are not regressions.
    """
    pool = [r for r in history if r.get("machine", {}).get("key") == machine_key and (mode is None or r.get("mode") == mode)]
    return pool[-1] if pool else None


def compare_figures(
    previous: dict[str, float | None], current: dict[str, float | None], threshold: float = THRESHOLD
) -> list[dict[str, Any]]:
    """One row per figure present in both, with the relative change and whether it is worse than threshold."""
    rows = []
    for name in sorted(set(previous) & set(current)):
        old, new = previous[name], current[name]
        if not isinstance(old, (int, float)) or not isinstance(new, (int, float)) or isinstance(old, bool):
            continue
        change = (new - old) / abs(old) if old else (0.0 if new == old else float("inf"))
        way = direction(name)
        worse = (way == "lower" and change > threshold) or (way == "higher" and change < -threshold)
        rows.append({"figure": name, "previous": old, "current": new, "change": change, "direction": way, "worse": worse})
    return rows


def format_comparison(
    rows: list[dict[str, Any]], previous: dict[str, Any] | None, threshold: float = THRESHOLD, show_all: bool = False
) -> str:
    """The figures more than `threshold` worse (all figures with show_all), and a one-line count."""
    if previous is None:
        return "no earlier record on this machine in this mode: nothing to compare with (this run becomes the baseline)"
    head = f"compared with {previous.get('date')} (git {str(previous.get('git', {}).get('sha'))[:10]}):"
    if not rows:
        return head + " no figures in common"
    shown = rows if show_all else [r for r in rows if r["worse"]]
    width = max([len(r["figure"]) for r in shown] or [0])
    lines = [head]
    for row in shown:
        change = "n/a" if row["change"] == float("inf") else f"{row['change'] * 100:+.1f}%"
        flag = f"  WORSE (>{threshold * 100:.0f}%)" if row["worse"] else ""
        lines.append(f"  {row['figure'].ljust(width)}  {_fmt(row['previous']):>10} -> {_fmt(row['current']):>10}  {change:>8}{flag}")
    flagged = sum(r["worse"] for r in rows)
    better = sum(
        1 for r in rows
        if (r["direction"] == "lower" and r["change"] < -threshold) or (r["direction"] == "higher" and r["change"] > threshold)
    )
    lines.append(
        f"{len(rows)} figures compared: {flagged} more than {threshold * 100:.0f}% worse, {better} more than "
        f"{threshold * 100:.0f}% better, the rest within {threshold * 100:.0f}%"
    )
    if any(r["worse"] and r["figure"].startswith("hardware.") for r in rows):
        lines.append(
            "note: the GEMM ceilings dropped too, so the machine was busier during this run; "
            "latency flags may be load, not code (re-run on an idle machine before acting on them)"
        )
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:.4g}"
