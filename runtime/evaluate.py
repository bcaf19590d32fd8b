"""Measure a bundle on labeled crops: accuracy per precision and each precision's drift from FP32.

The figures are computed exactly as calibration computed the ones stored in the manifest (same
preprocessing, same batches of 64 over the same tensors, same `metrics` functions), so a clinic can
re-check a bundle's claims on its own data with `karyo evaluate`. The result keeps the samples and
probabilities so later analyses (cell-level karyotype checks) can build on one pass over the data.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .assembly import CONSTITUTIONAL_TRISOMIES, DEFAULT_TRISOMIES, AssemblyPriors
from .bundle import PRECISIONS, Bundle, load_bundle
from .cell_size import SizePrior, sizes_array
from .classifier import choose_auto_precision
from .dataset import Sample, read_labeled_folders
from .labels import LabelScheme
from .int8_check import int8_overflow
from .metrics import TIE_MARGIN, classification_report, drift
from .orientation import check_orientation, chosen_orientation, half_turn, orientation_hint, read_oriented
from .preprocess import ImageError, PreprocessSpec, prepare_path
from .session import create_session, cuda_status, run_probabilities

if TYPE_CHECKING:  # read lazily, as _cell_metrics imports it
    from .cell_evaluation import CellReadings

BATCH = 64  # the batch calibration uses; keeping it makes the numbers reproduce bit for bit
_CHUNK = BATCH * 8  # tensors held in memory at once (a multiple of BATCH keeps batch boundaries)


@dataclass
class EvaluationResult:
    bundle: Path
    labels: LabelScheme
    provider: str
    primary: str  # the precision the top-level figures describe
    samples: list[Sample]  # evaluated samples, in the row order of every probs array
    y_true: np.ndarray
    probs: dict[str, np.ndarray]  # precision -> (N, classes)
    reports: dict[str, dict[str, Any]]  # precision -> classification_report
    drift: dict[str, dict[str, Any]]  # non-fp32 precision -> drift vs fp32
    manifest_metrics: dict[str, dict[str, Any]]
    skipped_labels: dict[str, int] = field(default_factory=dict)  # label not in the scheme -> count
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, error)
    cells: dict[str, dict[str, Any]] = field(default_factory=dict)  # precision -> evaluate_cells()
    extra: dict[str, Any] = field(default_factory=dict)  # later analyses add their sections here
    sizes: np.ndarray | None = None  # (N, 2) chromosome length and area per row, NaN where unmeasured
    turned: dict[str, np.ndarray] = field(default_factory=dict)  # precision -> (N,) read turned half a circle (`any`)
    cell_rows: list[int] = field(default_factory=list)  # the rows of `samples` read as cells, in `readings`' order
    readings: dict[str, CellReadings] = field(default_factory=dict)  # precision -> its cells as assembled for `cells`

    @property
    def precisions(self) -> list[str]:
        return list(self.reports)

    def to_dict(self) -> dict[str, Any]:
        main = self.reports[self.primary]
        result: dict[str, Any] = {
            "bundle": str(self.bundle),
            "provider": self.provider,
            "precision": self.primary,
            "n": main["n"],
            "accuracy": main["accuracy"],
            "per_class": main["per_class"],
            "labels": main["labels"],
            "confusion_matrix": main["confusion_matrix"],
            "skipped": {
                "labels_not_in_scheme": dict(self.skipped_labels),
                "unreadable": [{"path": p, "error": e} for p, e in self.unreadable],
            },
            "precisions": {p: self.precision_summary(p) for p in self.reports},
        }
        if self.primary in self.cells:
            result["cells"] = self.cells[self.primary]
        result.update(self.extra)
        return result

    def precision_summary(self, precision: str) -> dict[str, Any]:
        summary: dict[str, Any] = {"n": self.reports[precision]["n"], "accuracy": self.reports[precision]["accuracy"]}
        if precision in self.drift:
            figures = self.drift[precision]
            for key in ("agreement_with_fp32", "decisive_agreement", "decisive_n", "tie_margin", "kl_to_fp32",
                        "max_prob_diff", "accuracy_fp32", "flipped"):
                if key in figures:
                    summary[key] = figures[key]
        if precision in self.cells:
            cells = self.cells[precision]
            if "crop_accuracy_size" in cells:
                summary["crop_accuracy_size"] = cells["crop_accuracy_size"]
            summary["crop_accuracy_assembled"] = cells["crop_accuracy_assembled"]
            summary["complete_exact_rate"] = cells["complete_exact_rate"]
        summary["manifest"] = self.manifest_metrics.get(precision, {})
        return summary


def evaluate_bundle(
    bundle_or_path: Bundle | str | Path,
    data: str | Path | Sequence[str | Path] | Sequence[Sample],
    precision: str | None = None,
    provider: str = "cpu",
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    orientation: str | None = None,
    trisomies: str = DEFAULT_TRISOMIES,
) -> EvaluationResult:
    """Evaluate every available precision (or just `precision`, plus FP32 as the drift reference).

    `provider` defaults to the CPU because that is where calibration measured the manifest's
    figures; pass "auto"/"cuda" to measure what a GPU scanner will really compute. `orientation`
    reads the crops as the classifier would with it (``karyo.runtime.orientation``); None: the
    bundle's own, as the classifier does. `trisomies`: the count priors the cells are assembled
    under (``AssemblyPriors.for_trisomies``).
    """
    if orientation is not None:
        check_orientation(orientation)
    priors = AssemblyPriors.for_trisomies(trisomies)  # a wrong name fails here, before any crop is read
    bundle = bundle_or_path if isinstance(bundle_or_path, Bundle) else load_bundle(bundle_or_path)
    orientation = chosen_orientation(orientation, bundle.orientation)
    available = bundle.available_precisions
    if precision in (None, "all"):
        wanted = list(available)
    elif precision == "auto":
        likely = "cpu" if provider == "cpu" or (provider == "auto" and cuda_status() is not None) else "cuda"
        wanted = [choose_auto_precision(available, likely)[0]]
    else:
        bundle.model_path(precision)  # raises BundleError naming what the bundle has
        wanted = [precision]
    run = [p for p in PRECISIONS if p in wanted or (p == "fp32" and "fp32" in available)]

    samples, skipped = _in_scheme(_as_samples(data), bundle.labels)
    sessions = {}
    used_provider = provider
    for name in run:
        sessions[name], used_provider = create_session(bundle.model_path(name), provider, threads)

    kept: list[Sample] = []
    sizes: list[tuple[float, float] | None] = []
    unreadable: list[tuple[str, str]] = []
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in run}
    turned_parts: dict[str, list[np.ndarray]] = {name: [] for name in run}
    pending: list[np.ndarray] = []

    def flush() -> None:
        if not pending:
            return
        batch = np.stack(pending)
        for name in run:
            session = sessions[name]
            probs, turned = read_oriented(lambda x: run_probabilities(session, x, BATCH), batch, orientation)
            outputs[name].append(probs)
            turned_parts[name].append(turned)
        pending.clear()

    for done, sample in enumerate(samples, start=1):
        try:
            tensor, size = prepare_path(sample.path, bundle.spec)
            pending.append(tensor)
            sizes.append(size)
            kept.append(sample)
        except ImageError as exc:
            unreadable.append((str(sample.path), str(exc)))
        if len(pending) == _CHUNK:
            flush()
        if progress is not None and (done % BATCH == 0 or done == len(samples)):
            progress(done, len(samples))
    flush()

    classes = len(bundle.labels)
    probs = {n: np.concatenate(o) if o else np.zeros((0, classes), np.float32) for n, o in outputs.items()}
    y_true = np.array([bundle.labels.index(s.label) for s in kept], dtype=np.int64)
    labels = bundle.labels.labels
    reports = {n: classification_report(y_true, probs[n], labels) for n in run if n in wanted}
    drifts = {
        n: drift(probs[n], probs["fp32"], y_true, labels, tie_margin=_gate_tie_margin(bundle))
        for n in reports if n != "fp32" and "fp32" in probs
    }
    measured = sizes_array(sizes)
    primary = wanted[0] if len(wanted) == 1 else _default_primary(available, used_provider)
    extra: dict[str, Any] = {"orientation": orientation, "trisomies": trisomies}
    if seen := bundle.seen_in_training(s.case for s in kept):
        cases = len({s.case for s in kept})
        extra["cases_seen_in_training"] = {"cases": len(seen), "of": cases, "crops": sum(s.case in seen for s in kept)}
    if "int8" in sessions and (overflow := int8_overflow(bundle, used_provider)):
        extra["int8_overflow"] = overflow  # the INT8 figures below are what this CPU computes, not the model
    if orientation == "p-arm-up":
        extra["orientation_hints"] = _orientation_hints(kept, probs[primary], sessions[primary], bundle.spec)
    cells, cell_rows, readings = _cell_metrics(kept, probs, reports, bundle.labels, measured, bundle.size_prior, priors,
                                               constitutional=trisomies == CONSTITUTIONAL_TRISOMIES)
    return EvaluationResult(
        cells=cells,
        cell_rows=cell_rows,
        readings=readings,
        sizes=measured,
        bundle=bundle.path,
        labels=bundle.labels,
        provider=used_provider,
        primary=primary,
        samples=kept,
        y_true=y_true,
        probs=probs,
        reports=reports,
        drift=drifts,
        manifest_metrics={n: bundle.metrics(n) for n in reports},
        skipped_labels=skipped,
        unreadable=unreadable,
        extra=extra,
        turned={n: np.concatenate(t) if t else np.zeros(0, dtype=bool) for n, t in turned_parts.items()},
    )


def _gate_tie_margin(bundle: Bundle) -> float:
    """The margin the bundle's INT8 gate told ties by, so the decisive agreement measured here is
    the figure the gate read (bundles from before the margin existed: the default)."""
    gate = bundle.manifest.provenance.get("calibration", {}).get("config", {}).get("gate", {})
    value = gate.get("tie_margin") if isinstance(gate, dict) else None
    return float(value) if isinstance(value, (int, float)) and 0.0 <= value < 1.0 else TIE_MARGIN


def _orientation_hints(samples: list[Sample], probs: np.ndarray, session: Any, spec: PreprocessSpec) -> dict[str, str]:
    """Cell key -> hint for every known cell whose crops, read p arm up, seem not to stand p arm up
    (``orientation.orientation_hint``: only cells read unsurely are read again, turned)."""
    by_cell: dict[str, list[int]] = {}
    for row, sample in enumerate(samples):
        if sample.has_cell:
            by_cell.setdefault(sample.cell_key, []).append(row)
    hints: dict[str, str] = {}
    for key, rows in by_cell.items():
        def read_turned(rows: list[int] = rows) -> np.ndarray:
            tensors = np.stack([prepare_path(samples[row].path, spec)[0] for row in rows])
            return run_probabilities(session, half_turn(tensors), BATCH)

        try:
            hint = orientation_hint(probs[rows], read_turned)
        except ImageError:  # a file that changed since it was read: no hint, the figures stand
            hint = None
        if hint is not None:
            hints[key] = hint
    return hints


def _cell_metrics(
    samples: list[Sample], probs: dict[str, np.ndarray], reports: dict[str, Any], labels: LabelScheme,
    sizes: np.ndarray, size_prior: SizePrior | None, priors: AssemblyPriors, constitutional: bool = True,
) -> tuple[dict[str, dict[str, Any]], list[int], dict[str, CellReadings]]:
    """Cell-level figures (assembly, exact karyotype calls) when the data says which crops form a cell;
    with the bundle's size prior, each crop's size relative to its cell is weighed in first. Also
    the rows read as cells and, per precision, the cells as assembled: kept, so whatever looks at
    the same crops later (`karyo evaluate --errors`) sees the calls these figures count.

    Only crops with a known cell take part (a folder tree without a manifest has none), and only
    schemes that cover all 24 chromosomes can be assembled (not the binary ones).
    """
    from .cell_evaluation import evaluate_cells, read_cells
    from .karyotype import check_scheme

    try:
        check_scheme(labels)
    except ValueError:
        return {}, [], {}
    rows = [i for i, s in enumerate(samples) if s.has_cell]
    if not rows:
        return {}, [], {}
    known = [samples[i] for i in rows]
    readings = {name: read_cells(known, probs[name][rows], labels, priors, sizes=sizes[rows], size_prior=size_prior)
                for name in reports}
    cells = {
        name: evaluate_cells(known, probs[name][rows], labels, priors, sizes=sizes[rows], size_prior=size_prior,
                             constitutional=constitutional, readings=readings[name])
        for name in reports
    }
    return cells, rows, readings


def _default_primary(available: list[str], provider: str) -> str:
    """With every precision evaluated, headline the one `karyo classify` would use on this provider."""
    return choose_auto_precision(available, provider)[0]


def _as_samples(data: str | Path | Sequence[str | Path] | Sequence[Sample]) -> list[Sample]:
    if isinstance(data, (str, Path)):
        return read_labeled_folders([data])
    items = list(data)
    if items and all(isinstance(item, Sample) for item in items):
        return items  # type: ignore[return-value]
    return read_labeled_folders(items)  # type: ignore[arg-type]


def _in_scheme(samples: list[Sample], labels: LabelScheme) -> tuple[list[Sample], dict[str, int]]:
    """Samples whose label the model knows; the rest are counted per label (e.g. Y crops for a binary model)."""
    kept = [s for s in samples if s.label in labels]
    skipped = Counter(s.label for s in samples if s.label not in labels)
    return kept, dict(sorted(skipped.items()))
