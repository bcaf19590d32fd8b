"""Classify chromosome crops with a bundle: the object the CLI, the karyotype caller and benchmarks share.

One `Classifier` holds one ONNX Runtime session, which is safe to call from several threads at
once, so a scanner application can classify from worker threads without a lock. A crop that
cannot be read never takes its batch down: it comes back as a `Prediction` with `error` set.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .bundle import Bundle, BundleError, load_bundle
from .labels import LabelScheme
from .cell_size import SizePrior
from .focus import ChromosomeSize
from .int8_check import int8_overflow
from .orientation import check_orientation, chosen_orientation, half_turn, orientation_hint, read_oriented
from .preprocess import ImageError, PreprocessSpec, prepare_array, prepare_path, preprocess_array
from .session import create_session, cuda_status, input_name, n_outputs, output_name, run_probabilities

# What "auto" means per provider: FP16 is fast on GPUs but emulated on most CPUs; INT8 is the
# reverse. The remaining precisions follow as fall-backs when the bundle lacks the preferred one.
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cuda": ("fp16", "fp32", "int8"),
    "cpu": ("int8", "fp32", "fp16"),
}
PRECISION_CHOICES: tuple[str, ...] = ("auto", "fp32", "fp16", "int8")
DEFAULT_BATCH = 64

ProgressCallback = Callable[[int, int], None]


@dataclass
class Prediction:
    """One crop's answer. On error, label/probability are None, top_k is empty and `error` says why."""

    path: str | None
    label: str | None
    probability: float | None
    top_k: list[tuple[str, float]]
    error: str | None = None
    probs: np.ndarray | None = None
    size: ChromosomeSize | None = None  # chromosome length and area in the crop's own pixels
    turned: bool = False  # orientation "any": the read turned half a circle was the clearer, so the crop stood upside down

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "label": self.label,
            "probability": self.probability,
            "top_k": [{"label": label, "probability": p} for label, p in self.top_k],
            "error": self.error,
            "turned": self.turned,
        }


def choose_auto_precision(available: Sequence[str], provider: str) -> tuple[str, str]:
    """The precision `auto` picks on provider, and a sentence saying why (for `karyo info`/logs)."""
    order = AUTO_ORDER[provider]
    for precision in order:
        if precision in available:
            if precision == order[0]:
                return precision, f"{precision} is preferred on {provider}"
            skipped = ", ".join(p for p in order[: order.index(precision)])
            return precision, f"bundle has no {skipped} model; using {precision} on {provider}"
    raise BundleError("bundle holds no model at all")


def auto_precision_for(bundle: Bundle, provider: str) -> tuple[str, str, str | None]:
    """(the precision `auto` serves on provider, why, a warning when INT8 was passed over).

    One rule for the classifier and `karyo info`: an INT8 model this CPU would misread
    (`karyo.runtime.int8_check`) gives way to the next precision, since wrong reads are worse
    than slow ones. A bundle holding nothing else is a BundleError.
    """
    available = bundle.available_precisions
    chosen, reason = choose_auto_precision(available, provider)
    if chosen != "int8" or not (overflow := int8_overflow(bundle, provider)):
        return chosen, reason, None
    others = [p for p in available if p != "int8"]
    if not others:
        raise BundleError(overflow)
    chosen, _ = choose_auto_precision(others, provider)
    reason = f"this CPU's INT8 arithmetic overflows on the bundle's int8 model; {chosen} instead"
    return chosen, reason, f"{overflow}. Serving {chosen} meanwhile."


class Classifier:
    """A loaded bundle plus one inference session; thread-safe for prediction."""

    def __init__(
        self,
        bundle_or_path: Bundle | str | Path,
        precision: str = "auto",
        provider: str = "auto",
        threads: int | None = None,
        warmup: bool = True,
        batch_size: int = DEFAULT_BATCH,
        workers: int | None = None,
        orientation: str | None = None,
    ) -> None:
        """`workers`: threads decoding/preprocessing crops (OpenCV releases the GIL, so this scales
        with cores); default min(4, cores). `threads`: ONNX Runtime intra-op threads.
        `orientation`: "p-arm-up" reads crops as given; "any" also reads each turned half a circle
        and averages the two reads, for crops cut out of the metaphase (``karyo.runtime.orientation``);
        None: the bundle's own (p-arm-up, or any for a network trained with `--vflip`)."""
        if precision not in PRECISION_CHOICES:
            raise ValueError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {precision!r}")
        if orientation is not None:
            check_orientation(orientation)  # a bad value fails before the bundle is read
        self.bundle = bundle_or_path if isinstance(bundle_or_path, Bundle) else load_bundle(bundle_or_path)
        self.orientation = chosen_orientation(orientation, self.bundle.orientation)
        self.batch_size = int(batch_size)
        self.threads = threads
        self.workers = max(1, int(workers)) if workers is not None else min(4, os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._open(precision, provider, threads)
        self._check_model_matches_manifest()
        if warmup:
            self.warmup()

    def _open(self, precision: str, provider: str, threads: int | None) -> None:
        self.warning: str | None = None  # what a command line shows its operator (a precision refused)
        available = self.bundle.available_precisions
        if precision != "auto":
            self.session, self.provider = create_session(self.bundle.model_path(precision), provider, threads)
            self.precision, self.precision_reason = precision, "requested"
            if precision == "int8" and (overflow := int8_overflow(self.bundle, self.provider)):
                raise BundleError(f"{overflow}; or choose --precision fp32")
            return
        expected = "cpu" if provider == "cpu" or (provider == "auto" and cuda_status() is not None) else "cuda"
        chosen, reason = choose_auto_precision(available, expected)
        session, used = create_session(self.bundle.model_path(chosen), provider, threads)
        if used != expected:  # CUDA passed the cheap probe but did not load: pick again for the CPU
            first = chosen
            chosen, reason = choose_auto_precision(available, used)
            if chosen != first:
                session, used = create_session(self.bundle.model_path(chosen), "cpu", threads)
        if chosen == "int8":
            served, why, warning = auto_precision_for(self.bundle, used)
            if served != chosen:
                session, used = create_session(self.bundle.model_path(served), used, threads)
                chosen, reason, self.warning = served, why, warning
        self.session, self.provider = session, used
        self.precision, self.precision_reason = chosen, reason

    def _check_model_matches_manifest(self) -> None:
        model = self.bundle.model_path(self.precision)
        manifest = self.bundle.manifest
        if input_name(self.session) != manifest.input_name or output_name(self.session) != manifest.output_name:
            raise BundleError(
                f"{model}: model takes {input_name(self.session)!r} -> {output_name(self.session)!r}, "
                f"manifest says {manifest.input_name!r} -> {manifest.output_name!r}"
            )
        classes = n_outputs(self.session)
        if classes is not None and classes != len(self.labels):
            raise BundleError(f"{model}: model outputs {classes} classes, manifest lists {len(self.labels)} labels")
        shape = self.session.get_inputs()[0].shape
        expected = list(self.spec.input_shape)
        if len(shape) != 4 or any(isinstance(d, int) and d != e for d, e in zip(shape[1:], expected)):
            raise BundleError(f"{model}: model input shape {shape} does not match preprocessing {['N', *expected]}")

    @property
    def labels(self) -> LabelScheme:
        return self.bundle.labels

    @property
    def size_prior(self) -> SizePrior | None:
        return self.bundle.size_prior

    @property
    def spec(self) -> PreprocessSpec:
        return self.bundle.spec

    @property
    def cuda_reason(self) -> str | None:
        """Why this classifier is not on CUDA (None when it is)."""
        return None if self.provider == "cuda" else cuda_status()

    def describe(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle.path),
            "provider": self.provider,
            "precision": self.precision,
            "precision_reason": self.precision_reason,
            "cuda_unavailable": self.cuda_reason,
            "labels": self.labels.name,
            "orientation": self.orientation,
            "warning": self.warning,
        }

    def warmup(self) -> None:
        """One throw-away run, so the first real crop does not pay for lazy allocation and kernel choice."""
        self.predict_tensors(np.zeros((1, *self.spec.input_shape), np.float32))

    # --- tensors and arrays (strict: a bad input raises) -------------------------------------------

    def predict_tensors(self, tensors: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Probabilities (N, classes) for preprocessed NHWC float32 tensors, read as `orientation` says."""
        tensors = np.asarray(tensors, dtype=np.float32)
        if tensors.ndim != 4 or tuple(tensors.shape[1:]) != self.spec.input_shape:
            raise ValueError(f"expected tensors of shape (N, {', '.join(map(str, self.spec.input_shape))}), got {tensors.shape}")
        return self._read(tensors, batch_size)[0]

    def _read(self, tensors: np.ndarray, batch_size: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities under this classifier's orientation, and which crops were read turned."""
        size = batch_size or self.batch_size
        return read_oriented(lambda x: run_probabilities(self.session, x, size), tensors, self.orientation)

    def orientation_hint(self, paths: Sequence[str | Path], probs: np.ndarray) -> str | None:
        """For one cell's crops read p arm up (`probs`, row for row with `paths`): a one-line hint
        when they seem not to stand p arm up (``orientation.orientation_hint``), else None; always
        None when this classifier already reads both ways. Only an unsure cell is read again."""
        if self.orientation != "p-arm-up":
            return None

        def read_turned() -> np.ndarray:
            tensors = self._stack(self._map(lambda path: prepare_path(path, self.spec)[0], list(paths)))
            return run_probabilities(self.session, half_turn(tensors), self.batch_size)

        try:
            return orientation_hint(probs, read_turned)
        except ImageError:  # a file that changed since it was read: no hint, the reading stands
            return None

    def predict_arrays(self, images: Iterable[np.ndarray], batch_size: int | None = None) -> np.ndarray:
        """Probabilities for raw decoded crops (any size, gray/RGB, 8/16-bit). Raises ImageError naming the bad item."""
        tensors = []
        for index, image in enumerate(images):
            try:
                tensors.append(preprocess_array(image, self.spec))
            except ImageError as exc:
                raise ImageError(f"image {index}: {exc}") from None
        return self.predict_tensors(self._stack(tensors), batch_size)

    # --- lenient: one Prediction per item, errors included ----------------------------------------

    def predict_images(
        self, images: Sequence[np.ndarray], names: Sequence[str] | None = None, top_k: int = 3,
        batch_size: int | None = None,
    ) -> list[Prediction]:
        """Like predict_paths for in-memory crops (e.g. cut from a metaphase); bad crops get an error."""
        names = list(names) if names is not None else [None] * len(images)  # type: ignore[list-item]
        return self._predict(list(zip(names, images)), lambda image: prepare_array(image, self.spec), top_k, batch_size)

    def predict_paths(
        self, paths: Sequence[str | Path], top_k: int = 3, batch_size: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[Prediction]:
        """One Prediction per file, in order; unreadable files get `error` and the rest are still classified."""
        items = [(str(p), Path(p)) for p in paths]
        return self._predict(items, lambda path: prepare_path(path, self.spec), top_k, batch_size, progress)

    def predict_cell(
        self, crops: Sequence[str | Path | np.ndarray], top_k: int = 3, batch_size: int | None = None,
        names: Sequence[str | None] | None = None,
    ) -> tuple[list[Prediction], str | None]:
        """One cell's crops (files, or decoded arrays a scanner application cut out itself; mixed is
        fine), each read as `predict_paths` or `predict_images` reads it, and (read p arm up) the hint
        that they seem not to stand p arm up (``orientation.orientation_hint``), else None.
        `names` (default: a file's path, None for an array) become the predictions' `path`.

        The check turns the tensors this read has just made, so an unsure cell costs a second pass
        of the network and no second decode; `orientation_hint` on its own reads the files again.
        One cell's tensors are kept for it (46 crops of 96x32: about half a megabyte)."""
        kept: list[np.ndarray] = []
        if names is not None and len(names) != len(crops):
            raise ValueError(f"{len(names)} names for {len(crops)} crops")
        given = names if names is not None else [None if isinstance(c, np.ndarray) else str(c) for c in crops]
        items = [(name, crop if isinstance(crop, np.ndarray) else Path(crop)) for name, crop in zip(given, crops)]

        def prepare(crop: Path | np.ndarray) -> tuple[np.ndarray, ChromosomeSize | None]:
            return prepare_array(crop, self.spec) if isinstance(crop, np.ndarray) else prepare_path(crop, self.spec)

        predictions = self._predict(items, prepare, top_k, batch_size, keep=kept)
        if self.orientation != "p-arm-up" or not kept:
            return predictions, None
        size = batch_size or self.batch_size
        probs = np.stack([p.probs for p in predictions if p.error is None])
        return predictions, orientation_hint(probs, lambda: run_probabilities(self.session, half_turn(self._stack(kept)), size))

    def _map(self, function: Callable[[Any], Any], items: list) -> list:
        """Ordered map, on the preprocessing pool when it can help."""
        if self.workers == 1 or len(items) < 2:
            return [function(item) for item in items]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="karyo-preprocess")
        return list(self._pool.map(function, items))

    def close(self) -> None:
        """Stop the preprocessing threads (they also end with the process)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _predict(
        self, items: list, prepare: Callable[[Any], tuple[np.ndarray, ChromosomeSize | None]], top_k: int,
        batch_size: int | None, progress: ProgressCallback | None = None, keep: list[np.ndarray] | None = None,
    ) -> list[Prediction]:
        """`keep`: when given, the readable items' tensors are appended to it, in order."""
        size = batch_size or self.batch_size

        def prepare_one(entry: tuple) -> tuple[tuple[np.ndarray, ChromosomeSize | None] | None, str | None]:
            name, item = entry
            try:
                return prepare(item), None
            except ImageError as exc:
                message = str(exc)
                return None, message if name is None or message.startswith(str(name)) else f"{name}: {message}"

        results: list[Prediction] = []
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            tensors: list[np.ndarray] = []
            measured: dict[int, ChromosomeSize | None] = {}
            slots: list[int] = []
            errors: dict[int, str] = {}
            for offset, (prepared, error) in enumerate(self._map(prepare_one, chunk)):
                if prepared is None:  # prepare_one returns a message exactly when it has no tensor
                    # an unnamed in-memory crop is named by its place in the call, so the error can be traced
                    errors[offset] = str(error) if chunk[offset][0] is not None else f"image {start + offset}: {error}"
                else:
                    tensors.append(prepared[0])
                    measured[offset] = prepared[1]
                    slots.append(offset)
            probs, turned = self._read(self._stack(tensors), size) if tensors else (None, None)
            if keep is not None:
                keep.extend(tensors)
            row_of = {offset: row for row, offset in enumerate(slots)}
            for offset, (name, _) in enumerate(chunk):
                if offset in errors:
                    results.append(Prediction(name, None, None, [], errors[offset], None))
                else:
                    prediction = self._prediction(name, probs[row_of[offset]], top_k)  # type: ignore[index]
                    prediction.size = measured[offset]
                    prediction.turned = bool(turned[row_of[offset]])  # type: ignore[index]
                    results.append(prediction)
            if progress is not None:
                progress(min(start + size, len(items)), len(items))
        return results

    def _prediction(self, name: str | None, probs: np.ndarray, top_k: int) -> Prediction:
        order = np.argsort(-probs, kind="stable")[: max(1, top_k)]
        ranked = [(self.labels.labels[i], float(probs[i])) for i in order]
        return Prediction(name, ranked[0][0], ranked[0][1], ranked[: max(0, top_k)], None, probs.copy())

    def _stack(self, tensors: list[np.ndarray]) -> np.ndarray:
        if not tensors:
            return np.zeros((0, *self.spec.input_shape), np.float32)
        return np.stack(tensors).astype(np.float32, copy=False)
