"""`karyo bench`: how fast a bundle runs on this machine, per precision and batch size."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .cli_common import EXIT_SOME_FAILED, ProviderChoice, user_errors


def _parse_batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers like 1,8,46,64, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter("batch sizes must be positive integers")
    return sizes


@user_errors
def bench(
    bundle: Path = typer.Argument(..., help="Bundle folder (with manifest.json)."),
    batch_sizes: str = typer.Option("1,8,46,64", "--batch-sizes", help="Comma-separated batch sizes (46 = one cell)."),
    precision: Optional[List[str]] = typer.Option(
        None, "--precision", "-p", help="fp32, fp16 or int8; repeat for several (default: all in the bundle)."
    ),
    provider: ProviderChoice = typer.Option(ProviderChoice.auto, "--provider", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Intra-op threads (default: ONNX Runtime's)."),
    iterations: int = typer.Option(20, "--iterations", min=1, help="Timed calls per batch size (after warm-up)."),
    max_seconds: float = typer.Option(20.0, "--max-seconds", help="Stop timing a batch size after this long (min 3 calls)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Time real crops from this folder instead of random tensors."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of a table."),
) -> None:
    """Session load time, warm-up, p50/p90/p99 latency, per-image time, throughput and peak memory."""
    from .bench import benchmark_bundle, format_table
    from .preprocess import ImageError

    sizes = _parse_batch_sizes(batch_sizes)
    progress = None if as_json else (lambda text: print(f"  {text}", file=sys.stderr, flush=True))
    try:
        result = benchmark_bundle(
            bundle,
            batch_sizes=sizes,
            precisions=precision or None,
            provider=provider.value,
            threads=threads,
            iterations=iterations,
            max_seconds=max_seconds,
            data_dir=data,
            progress=progress,
        )
    except ImageError as exc:  # a --data crop that cannot be read; bad bundles and providers exit 2 (user_errors)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_SOME_FAILED) from None
    for warning in result["warnings"]:  # on stderr in both forms, as `karyo evaluate` says it
        typer.echo(f"warning: {warning}", err=True)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    machine = result["machine"]
    info = result["bundle"]
    typer.echo(
        f"{info['path']}: {info['labels']} ({info['classes']} classes), input {info['input_size']} px, "
        f"inputs {result['settings']['inputs']}"
    )
    typer.echo(
        f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['simd']}, int8 sums {machine['int8_sums']}; "
        f"onnxruntime {result['versions'].get('onnxruntime')}"
    )
    typer.echo(format_table(result["records"]))
