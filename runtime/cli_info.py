"""`karyo info`: what a bundle holds, after verifying every file's sha256."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from .cli_common import short_float, user_errors


def bundle_info(path: Path) -> dict[str, Any]:
    from .bundle import BundleError, load_bundle
    from .classifier import auto_precision_for, choose_auto_precision
    from .session import probe_cuda

    bundle = load_bundle(path, verify=True)
    manifest = bundle.manifest
    data = manifest.to_dict()
    precisions = {}
    for name in bundle.available_precisions:
        file = bundle.model_path(name)
        precisions[name] = {
            "file": file.name,
            "bytes": file.stat().st_size,
            "sha256": manifest.files.get(manifest.precisions[name]["file"]),
            "metrics": bundle.metrics(name),
        }
    available = bundle.available_precisions
    # A real session, not the cheap checks: a driver with its GPU hidden or taken passes those.
    cuda_problem = probe_cuda(bundle.model_path(available[0])) if available else "not probed: no model file"
    auto = {p: choose_auto_precision(available, p)[0] for p in ("cpu", "cuda")} if available else {}
    warning = None
    if available:  # on the CPU, what the classifier would really serve here (an INT8 this CPU misreads is not)
        try:
            auto["cpu"], _, warning = auto_precision_for(bundle, "cpu")
        except BundleError as exc:  # nothing but an INT8 model this CPU misreads
            auto["cpu"], warning = "none", str(exc)
    return {
        "bundle": str(bundle.path),
        "verified": True,
        "files_verified": len(manifest.files),
        "schema_version": manifest.schema_version,
        "labels": data["labels"],
        "input": data["input"],
        "output": data["output"],
        "preprocess": data["preprocess"],
        "orientation": bundle.orientation,
        "precisions": precisions,
        "auto_precision": auto,
        "warning": warning,
        "cuda": cuda_problem or "usable",
        "provenance": manifest.provenance,
    }


def format_info(info: dict[str, Any]) -> str:
    labels = info["labels"]
    lines = [
        f"bundle:      {info['bundle']}  (verified: {info['files_verified']} files, sha256 OK)",
        f"labels:      {labels['scheme']} ({len(labels['names'])} classes): {', '.join(labels['names'])}",
        f"input:       {info['input']['name']} {info['input']['shape']} {info['input']['layout']} {info['input']['dtype']}",
        f"output:      {info['output']['name']} {info['output']['shape']}",
        "preprocess:  " + ", ".join(f"{k}={v}" for k, v in info["preprocess"].items()),
        f"orientation: {info['orientation']}  ({'each crop read as given and turned half a circle' if info['orientation'] == 'any' else 'crops read as given, p arm up'}; --orientation overrides)",
        f"auto picks:  {', '.join(f'{p} on {prov}' for prov, p in info['auto_precision'].items())}  (CUDA: {info['cuda']})",
        "",
        f"{'precision':<10}{'file':<22}{'size':>10}{'accuracy':>10}{'agree_fp32':>12}{'kl_to_fp32':>12}",
    ]
    for name, entry in info["precisions"].items():
        m = entry["metrics"]
        lines.append(
            f"{name:<10}{entry['file']:<22}{entry['bytes'] / 1e6:>8.2f}MB{short_float(m.get('accuracy')):>10}"
            f"{short_float(m.get('agreement_with_fp32')):>12}{short_float(m.get('kl_to_fp32'), 5):>12}"
        )
    if info["provenance"]:
        lines += ["", "provenance:"]
        for key, value in info["provenance"].items():
            text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
            lines.append(f"  {key}: {text if len(text) <= 160 else text[:157] + '...'}")
    return "\n".join(lines)


@user_errors
def info(
    bundle: Path = typer.Argument(..., metavar="BUNDLE", help="Bundle folder (with manifest.json)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Verify a bundle and show its labels, input, preprocessing, precisions (sizes, metrics) and provenance."""
    details = bundle_info(bundle)
    if details["warning"]:
        typer.echo(f"warning: {details['warning']}", err=True)
    if as_json:
        sys.stdout.write(json.dumps(details, indent=2) + "\n")
    else:
        typer.echo(format_info(details))
