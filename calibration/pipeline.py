"""Add FP16 and INT8 models to a bundle, measure their drift, and refuse an INT8 model that drifts.

A lab validates a classifier once, on FP32. A quantized copy is only acceptable if it answers the
same way, so INT8 has to pass a gate (top-1 agreement with FP32, accuracy loss) on held-out crops.
When it fails, the usual remedies are tried in a fixed, reported order: the other calibration
methods, then leaving the few most quantization-sensitive nodes in float. If none passes, no INT8
file is written and the caller gets the numbers, never a silently worse model.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from karyo.runtime.bundle import Manifest, load_bundle, staged_folder, write_manifest
from karyo.runtime.dataset import Sample

from .config import METHODS, QuantizationConfig, answers_changed
from karyo.runtime.tensors import LabeledTensors, load_labeled_tensors

from .data import provenance, select_stratified
from .drift import drift_metrics, format_drift_table, latency_ms, probabilities
from .fp16 import convert_fp16
from .int8 import nodes_for_top_k, prepare_for_quantization, quantizable_nodes, quantize_int8, rank_sensitive_nodes

FILES = {"fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
_SENSITIVITY_SAMPLES = 64
MIN_RELIABLE_EVAL = 200  # below this, the 99% agreement gate rests on one or two crops


class GateFailedError(RuntimeError):
    """INT8 drifted too far from FP32 after every remedy; `report` holds every attempt's numbers."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _require_tensors(tensor_set: LabeledTensors, what: str) -> None:
    if len(tensor_set) == 0:
        reasons = "; ".join(tensor_set.skipped[:3]) or "no samples given"
        raise ValueError(f"no usable {what} crops ({reasons})")


def add_low_precisions(
    stage_dir: Path,
    manifest: Manifest,
    calibration: Sequence[Sample],
    evaluation: Sequence[Sample],
    precisions: Sequence[str] = ("fp16", "int8"),
    config: QuantizationConfig | None = None,
    provider: str = "cpu",
    progress: bool = True,
    calibration_source: str | None = None,
    evaluation_source: str | None = None,
) -> dict[str, Any]:
    """Write model.fp16.onnx / model.int8.onnx next to model.fp32.onnx and fill the manifest entries.

    Drift is always measured on the CPU provider (what `karyo evaluate` re-measures), reading the
    crops the way the bundle reads them (manifest `orientation`; both ways for "any"); `provider`
    is where latency is timed, one pass of the network per crop. The manifest is updated in memory;
    the caller writes it.
    """
    config = config or QuantizationConfig()
    unknown = [p for p in precisions if p not in FILES]
    if unknown:
        raise ValueError(f"precisions must be among {', '.join(FILES)}, got {', '.join(unknown)}")
    stage_dir = Path(stage_dir)
    if "fp32" not in manifest.precisions:
        raise ValueError("manifest has no fp32 entry to derive low precisions from")
    fp32_path = stage_dir / manifest.precisions["fp32"]["file"]
    if not fp32_path.is_file():
        raise FileNotFoundError(f"{fp32_path}: FP32 model missing")
    labels = list(manifest.labels.labels)
    spec = manifest.preprocess

    evaluation_set = load_labeled_tensors(evaluation, spec, manifest.labels, "  preprocessing evaluation crops", progress)
    _require_tensors(evaluation_set, "evaluation")
    orientation = manifest.orientation
    reference = probabilities(fp32_path, evaluation_set.x, orientation=orientation)
    fp32_entry = manifest.precisions["fp32"]
    fp32_entry.setdefault("metrics", {}).update(
        drift_metrics(reference, reference, evaluation_set.y, labels, config.gate.tie_margin)
    )
    latency_sample = evaluation_set.x[:64]
    if config.measure_latency:
        fp32_entry["latency"] = latency_ms(fp32_path, latency_sample, provider=provider)
    manifest.provenance["evaluation"] = {
        **provenance(evaluation_set.samples, evaluation_source, len(evaluation_set)),
        "skipped": len(evaluation_set.skipped),
        "orientation": orientation,
    }
    if len(evaluation_set) < MIN_RELIABLE_EVAL:
        note = (f"only {len(evaluation_set)} evaluation crops: one flipped crop moves agreement by "
                f"{100 / len(evaluation_set):.2f} points, so the INT8 gate is a weak check")
        manifest.provenance["evaluation"]["note"] = note
        _say(progress, f"warning: {note}")
    result: dict[str, Any] = {"evaluation": manifest.provenance["evaluation"], "precisions": {}}

    if "fp16" in precisions:
        _say(progress, "FP16: converting and measuring drift")
        fp16_path = convert_fp16(fp32_path, stage_dir / FILES["fp16"])
        entry: dict[str, Any] = {
            "file": FILES["fp16"],
            "metrics": drift_metrics(probabilities(fp16_path, evaluation_set.x, orientation=orientation), reference,
                                     evaluation_set.y, labels, config.gate.tie_margin),
            "intended_provider": "cuda",
        }
        if config.measure_latency:
            entry["latency"] = latency_ms(fp16_path, latency_sample, provider=provider)
        manifest.precisions["fp16"] = entry
        result["precisions"]["fp16"] = entry

    if "int8" in precisions:
        int8 = _make_int8(stage_dir, fp32_path, manifest, calibration, evaluation_set, reference, config, progress, calibration_source)
        result["precisions"].update(int8.pop("precisions"))
        result.update(int8)

    result["precisions"]["fp32"] = fp32_entry
    result["table"] = format_drift_table({p: manifest.precisions[p] for p in ("fp32", "fp16", "int8") if p in manifest.precisions})
    return result


def _make_int8(
    stage_dir: Path,
    fp32_path: Path,
    manifest: Manifest,
    calibration: Sequence[Sample],
    evaluation_set: LabeledTensors,
    reference: np.ndarray,
    config: QuantizationConfig,
    progress: bool,
    calibration_source: str | None,
) -> dict[str, Any]:
    labels = list(manifest.labels.labels)
    target = stage_dir / FILES["int8"]
    target.unlink(missing_ok=True)  # a stale INT8 from an earlier run must not survive a failed gate
    manifest.precisions.pop("int8", None)
    chosen = select_stratified(calibration, config.calibration_size, config.calibration_seed)
    calibration_set = load_labeled_tensors(chosen, manifest.preprocess, manifest.labels, "  preprocessing calibration crops", progress)
    _require_tensors(calibration_set, "calibration")
    calibration_record: dict[str, Any] = {
        **provenance(calibration_set.samples, calibration_source, len(calibration_set)),
        "skipped": len(calibration_set.skipped),
        "selection": "stratified by class, then case",
        "config": config.to_dict(),
    }
    manifest.provenance["calibration"] = calibration_record
    attempts: list[dict[str, Any]] = []

    with tempfile.TemporaryDirectory(prefix="karyo-int8-") as folder:
        work = Path(folder)
        prepared, note = prepare_for_quantization(fp32_path, work / "prepared.onnx")
        if note:
            calibration_record["note"] = note

        def attempt(method: str, excluded: list[str], remedy: str) -> dict[str, Any]:
            candidate = work / f"int8.{len(attempts)}.onnx"
            _say(progress, f"INT8: {remedy} (calibration {method}, {len(calibration_set)} crops)")
            quantize_int8(prepared, candidate, calibration_set.x, config, method, excluded, manifest.input_name)
            read = probabilities(candidate, evaluation_set.x, orientation=manifest.orientation)
            metrics = drift_metrics(read, reference, evaluation_set.y, labels, config.gate.tie_margin)
            passed, reasons = config.gate.check(metrics)
            gated, counted = config.gate.gated_agreement(metrics)
            record = {
                "remedy": remedy,
                "method": method,
                "excluded_nodes": list(excluded),
                "agreement_with_fp32": metrics["agreement_with_fp32"],
                "gated_agreement": gated,
                "gated_crops": metrics["n"] if counted is None else counted,
                "accuracy_drop": metrics.get("accuracy_fp32", 0.0) - metrics.get("accuracy", 0.0),
                "right_to_wrong": metrics.get("right_to_wrong"),
                "wrong_to_right": metrics.get("wrong_to_right"),
                "kl_to_fp32": metrics["kl_to_fp32"],
                "passed": passed,
                "reasons": reasons,
                "_path": candidate,
                "_metrics": metrics,
            }
            attempts.append(record)
            decisive = "" if counted is None else f" ({gated:.4f} on the {counted} decisive crops)"
            lost, gained = record["right_to_wrong"], record["wrong_to_right"]
            truth = f" ({answers_changed(lost, gained)})" if lost or gained else ""
            _say(progress, f"      agreement {metrics['agreement_with_fp32']:.4f}{decisive}, accuracy drop "
                 f"{record['accuracy_drop'] * 100:.2f} points{truth}: {'pass' if passed else 'fail: ' + '; '.join(reasons)}")
            return record

        base_excluded = list(config.excluded_nodes)
        winner = attempt(config.method, base_excluded, "as configured")
        if not winner["passed"] and config.remedies:
            for method in (m for m in METHODS if m != config.method):
                winner = attempt(method, base_excluded, f"other calibration method: {method}")
                if winner["passed"]:
                    break
        ranked: list[dict[str, Any]] = []
        if not winner["passed"] and config.remedies and config.max_excluded_nodes > 0:
            best = max(attempts, key=lambda a: (a["gated_agreement"], -a["accuracy_drop"]))
            _say(progress, "INT8: ranking nodes by quantization error (qdq_loss_debug)")
            ranked = rank_sensitive_nodes(
                prepared, best["_path"], calibration_set.x[:_SENSITIVITY_SAMPLES], manifest.input_name,
                config.calibration_batch_size,
            )
            calibration_record["sensitive_tensors"] = ranked[:8]
            compute = set(quantizable_nodes(prepared, compute_only=True))
            budget = min(config.max_excluded_nodes, max(1, int(config.max_excluded_fraction * len(compute))))
            calibration_record["exclusion_budget"] = {"compute_nodes": budget, "of": len(compute)}
            tried: set[tuple[str, ...]] = set()
            for k in range(1, len(ranked) + 1):
                excluded = base_excluded + [n for n in nodes_for_top_k(ranked, k) if n not in base_excluded]
                if len(compute.intersection(excluded) - set(base_excluded)) > budget:
                    break
                if tuple(excluded) in tried:
                    continue
                tried.add(tuple(excluded))
                winner = attempt(best["method"], excluded, f"kept {len(excluded) - len(base_excluded)} sensitive node(s) in float, "
                                 f"{len(compute.intersection(excluded) - set(base_excluded))} of them conv/matmul")
                if winner["passed"]:
                    break
        public_attempts = [{key: value for key, value in a.items() if not key.startswith("_")} for a in attempts]
        calibration_record["attempts"] = public_attempts
        if not winner["passed"]:
            best = max(attempts, key=lambda a: (a["gated_agreement"], -a["accuracy_drop"]))
            gate = config.gate
            message = (
                f"INT8 failed the gate after {len(attempts)} attempt(s): best top-1 agreement "
                f"{best['gated_agreement']:.4f} on {best['gated_crops']} crops (need >= {gate.min_agreement:.4f}), accuracy drop "
                f"{best['accuracy_drop'] * 100:.2f} points (allowed {gate.max_accuracy_drop * 100:.2f}) "
                f"[{best['remedy']}, {best['method']}]; no INT8 model written"
            )
            hint = _coverage_hint(calibration_set.x, evaluation_set.x)
            if hint:
                message += f". {hint}"
            calibration_record["gate"] = {"status": "failed", "message": message}
            raise GateFailedError(message, {"attempts": public_attempts, "calibration": calibration_record})
        temp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(winner["_path"], temp)
        temp.replace(target)
        quantizable_count = len(quantizable_nodes(prepared))

    metrics = winner["_metrics"]
    entry: dict[str, Any] = {
        "file": FILES["int8"],
        "metrics": metrics,
        "quantization": {
            **config.to_dict(),
            "method": winner["method"],
            "excluded_nodes": winner["excluded_nodes"],
            "quantizable_nodes": quantizable_count,
        },
        "gate": {"status": "passed", **config.gate.to_dict(), "remedy": winner["remedy"], "attempts": len(attempts)},
        "intended_provider": "cpu",
    }
    if config.measure_latency:
        entry["latency"] = latency_ms(target, evaluation_set.x[:64])
    manifest.precisions["int8"] = entry
    calibration_record["gate"] = {"status": "passed", "remedy": winner["remedy"]}
    return {
        "calibration": calibration_record,
        "attempts": public_attempts,
        "remedy": winner["remedy"],
        "precisions": {"int8": entry},
    }



def _coverage_hint(calibration: np.ndarray, evaluation: np.ndarray) -> str | None:
    """Say so when the calibration crops cannot represent the evaluation crops (blank or washed-out sets).

    Static INT8 fixes every activation range from the calibration crops; crops whose input range
    is a fraction of the real one make every layer's range too narrow, and real crops saturate.
    """
    calibration_span = float(calibration.max() - calibration.min())
    evaluation_span = float(evaluation.max() - evaluation.min())
    if evaluation_span > 0 and calibration_span < 0.5 * evaluation_span:
        return (
            f"The calibration crops span {calibration_span:.3f} of input range against {evaluation_span:.3f} "
            "for the evaluation crops (blank or low-contrast crops?): calibrate on real crops from the scanner"
        )
    return None


def quantize_bundle(
    bundle_path: str | Path,
    calibration: Sequence[Sample],
    evaluation: Sequence[Sample],
    config: QuantizationConfig | None = None,
    precisions: Sequence[str] = ("fp16", "int8"),
    progress: bool = True,
    calibration_source: str | None = None,
    evaluation_source: str | None = None,
) -> dict[str, Any]:
    """Redo FP16/INT8 for an existing bundle, atomically: on any failure the old bundle stays as it was.

    The work happens in a staged copy; only a complete, re-hashed bundle replaces the original.
    Raises `BundleError` for a bundle that does not verify and `GateFailedError` if INT8 fails.
    """
    bundle = load_bundle(bundle_path, verify=True)
    with staged_folder(bundle.path, start_from_existing=True) as stage:
        manifest = Manifest.from_dict(json.loads((stage / "manifest.json").read_text(encoding="utf-8")))
        result = add_low_precisions(
            stage, manifest, calibration, evaluation, precisions, config, "cpu", progress,
            calibration_source=calibration_source, evaluation_source=evaluation_source,
        )
        write_manifest(stage, manifest)
    load_bundle(bundle.path, verify=True)
    return result
