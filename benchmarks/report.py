"""What `benchmarks/run.py` shows and keeps of one record: the printed tables, the comparison with
the previous record of the same machine, the pictures, `record.json` and the history line.

Kept apart from the measuring so a record can be re-reported (or a test can report a made-up one)
without timing anything.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import history
import plots
import suite

from karyo.runtime.bundle import atomic_write_text


def report(record: dict[str, Any], args: argparse.Namespace) -> None:
    """Print tables and the comparison, draw the pictures, append to the history, save record.json."""
    out = args.out
    past = history.load_history(args.history)
    previous = history.previous_on_machine(past, record["machine"]["key"], record["mode"])
    rows = history.compare_figures(previous.get("figures", {}), record["figures"]) if previous else []
    hw = record["hardware"]
    print(f"machine: {record['machine']['key']}, {record['threads']} thread(s); GEMM ceilings: numpy fp32 "
          f"{hw.get('numpy_fp32_gflops')} GFLOP/s, ORT fp32 {hw.get('ort_fp32_gflops')} GFLOP/s, ORT int8 {hw.get('ort_int8_gops')} GOP/s")
    latency = record.get("latency", {})
    for arch, info in latency.get("models", {}).items():
        macs = f"{info['macs_per_image'] / 1e6:.1f} M MACs/image" if info.get("macs_per_image") else "MACs unknown"
        print(f"{arch}: {info['input_size']} px, {macs}, {info['parameters'] / 1e6:.2f} M parameters; ONNX bundle {info['bundle']}")
    if latency.get("rows"):
        print(suite.format_latency_table(latency["rows"]))
    cell = record.get("cell", {})
    if cell.get("end_to_end"):
        stages = ", ".join(f"{k} {v:.1f}" for k, v in cell["stages_p50_ms"].items())
        print(f"cell: {cell['crops']} crops {cell['precision']} end to end p50 {cell['end_to_end']['p50_ms']:.1f} ms "
              f"(goal < 50 ms: {'met' if cell['meets_goal'] else 'MISSED'}); stages p50 ms: {stages}"
              + (f"; karyotype {cell['karyotype']}" if cell.get("karyotype") else "")
              + (f"; warning: {cell['orientation_hint']}" if cell.get("orientation_hint") else "")
              + (f"; assembly skipped: {cell['assembly_skipped']}" if cell.get("assembly_skipped") else ""))
        product = cell.get("product")
        if product:
            print(f"cell through Karyotyper.read_cell (size prior, decode pool): p50 {product['files_p50_ms']:.1f} ms "
                  f"from files (goal < 50 ms: {'met' if product['meets_goal'] else 'MISSED'}), "
                  f"{product['arrays_p50_ms']:.1f} ms from arrays in memory; karyotype {product['karyotype']}")
        either = record.get("cell_any") or {}
        if either.get("end_to_end"):
            print(f"cell, --orientation any: end to end p50 {either['end_to_end']['p50_ms']:.1f} ms "
                  f"({either['end_to_end']['p50_ms'] / cell['end_to_end']['p50_ms']:.2f}x p-arm-up; goal < 50 ms: "
                  f"{'met' if either['meets_goal'] else 'MISSED'}); inference p50 {either['stages_p50_ms']['inference']:.1f} ms")
    else:
        print(f"cell: skipped ({cell.get('skipped')})")
    for source, section in (record.get("drift") or {}).items():
        if "skipped" in section:
            print(f"drift {source}: skipped ({section['skipped']})")
        for name, result in section.items():
            if isinstance(result, dict) and "precisions" in result:
                parts = [f"{p} acc {m.get('accuracy', float('nan')):.4f} agree {m.get('agreement_with_fp32', float('nan')):.4f}"
                         for p, m in result["precisions"].items()]
                print(f"drift {source} {name} (n={result['n']}): " + "; ".join(parts))
    demo = record.get("demo", {})
    print(f"demo: {demo.get('wall_s')} s" if demo.get("wall_s") is not None else f"demo: not timed ({demo.get('skipped') or demo.get('returncode')})")
    print(history.format_comparison(rows, previous))
    atomic_write_text(out / "comparison.txt", history.format_comparison(rows, previous, show_all=True) + "\n")
    record["comparison"] = {"previous_date": previous.get("date") if previous else None,
                            "worse": [r["figure"] for r in rows if r["worse"]]}
    if latency.get("rows"):
        plots.line_plot(plots.latency_series(latency["rows"]), out / "latency.png",
                        "p50 latency per image", "batch size", "ms per image", log_y=True)
    plots.line_plot(plots.drift_history_series(past + [record], record["machine"]["key"]), out / "drift_history.png",
                    "accuracy / agreement over runs", "run", "fraction", y_range=(0.0, 1.0))
    atomic_write_text(out / "record.json", json.dumps(record, indent=2))
    if not args.no_history:
        history.append_record(record, args.history)
    print(f"wall time {record.get('wall_s')} s; record appended to {args.history if not args.no_history else '(not appended)'}; pictures in {out}")
