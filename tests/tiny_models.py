"""Tiny ONNX classifiers and real bundles for runtime tests, built with onnx.helper (no TensorFlow).

The model is `image [N,S,S,1] -> Flatten -> MatMul W -> Add b -> Softmax -> probabilities`, so a
numpy reference (`reference_probs`) gives the exact expected output. Weights are class templates:
a crop drawn from class k's template (plus noise) is classified as k, so accuracy figures in
evaluate tests mean something.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from karyo.runtime.bundle import Manifest, write_manifest
from karyo.runtime.labels import LabelScheme, scheme
from karyo.runtime.preprocess import PreprocessSpec, preprocess_array

CROP_SHAPE = (24, 12)  # height, width: tall and narrow like real chromosome crops


def build_model(weights: np.ndarray, bias: np.ndarray, size: int) -> onnx.ModelProto:
    n_features, n_classes = weights.shape
    assert n_features == size * size
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "W"], ["logits_raw"]),
            helper.make_node("Add", ["logits_raw", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", size, size, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n_classes])],
        initializer=[
            numpy_helper.from_array(weights.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="karyo-tests")
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def reference_probs(tensors: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    logits = tensors.reshape(len(tensors), -1).astype(np.float64) @ weights.astype(np.float64) + bias
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def class_template(index: int, seed: int = 0) -> np.ndarray:
    """A uint8 crop for class `index`: white border, dark random bands inside (dark-on-light like G-banding)."""
    rng = np.random.default_rng(seed * 1000 + index)
    height, width = CROP_SHAPE
    crop = np.full((height, width), 255, np.uint8)
    bands = rng.integers(30, 230, size=(height - 4, 1)).astype(np.uint8)
    crop[2:-2, 3:-3] = np.repeat(bands, width - 6, axis=1)
    return crop


def noisy_crop(index: int, rng: np.random.Generator, seed: int = 0, noise: float = 12.0) -> np.ndarray:
    crop = class_template(index, seed).astype(np.float32)
    inner = crop[2:-2, 3:-3]
    crop[2:-2, 3:-3] = inner + rng.normal(0.0, noise, inner.shape)
    return np.clip(crop, 0, 255).astype(np.uint8)


def template_weights(labels: LabelScheme, spec: PreprocessSpec, seed: int = 0, gain: float = 8.0):
    columns = []
    for index in range(len(labels)):
        vector = preprocess_array(class_template(index, seed), spec).reshape(-1)
        vector = vector - vector.mean()
        columns.append(gain * vector / (np.linalg.norm(vector) + 1e-6))
    weights = np.stack(columns, axis=1).astype(np.float32)
    bias = np.zeros(len(labels), np.float32)
    return weights, bias


@dataclass
class TinyBundle:
    path: Path
    spec: PreprocessSpec
    labels: LabelScheme
    weights: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def reference(self, tensors: np.ndarray, precision: str = "fp32") -> np.ndarray:
        return reference_probs(tensors, *self.weights[precision])


def make_bundle(
    folder: Path,
    scheme_name: str = "normal24",
    size: int = 16,
    precisions: tuple[str, ...] = ("fp32", "int8"),
    seed: int = 0,
    perturb: float = 0.02,
    metrics: dict[str, dict] | None = None,
    max_pixels: int | None = None,
    swap: tuple[str, str] | None = None,
    orientation: str = "p-arm-up",
) -> TinyBundle:
    """A real, verified bundle. Lower precisions are the fp32 weights slightly perturbed, so a test
    can tell which file was loaded and drift figures are non-zero. `swap` names two classes the
    model reads as each other (their weight columns exchanged): a model wrong in a known way."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels = scheme(scheme_name)
    # the class templates are random textures, not chromosomes: finding "the main object" in them
    # would cut noisy copies differently from their template, so the fixture keeps the plain geometry
    plain = dict(focus_main_object=False, tight_crop=False)
    spec = PreprocessSpec(size=size, **plain) if max_pixels is None else PreprocessSpec(size=size, max_pixels=max_pixels, **plain)
    weights, bias = template_weights(labels, spec, seed)
    if swap is not None:
        first, second = labels.index(swap[0]), labels.index(swap[1])
        weights[:, [first, second]] = weights[:, [second, first]]
    rng = np.random.default_rng(seed + 99)
    bundle = TinyBundle(folder, spec, labels)
    entries: dict[str, dict] = {}
    for precision in precisions:
        w = weights if precision == "fp32" else weights + rng.normal(0, perturb, weights.shape).astype(np.float32)
        bundle.weights[precision] = (w, bias)
        onnx.save(build_model(w, bias, size), str(folder / f"model.{precision}.onnx"))
        entries[precision] = {"file": f"model.{precision}.onnx", "metrics": dict((metrics or {}).get(precision, {}))}
    manifest = Manifest(labels=labels, preprocess=spec, precisions=entries, provenance={"producer": "tests/tiny_models.py"},
                        orientation=orientation)
    write_manifest(folder, manifest)
    return bundle


def write_labeled_folder(
    root: Path, labels: LabelScheme, per_class: int = 2, seed: int = 0, ext: str = ".png", classes: list[int] | None = None
) -> list[tuple[Path, str]]:
    """`root/<label>/c<k>_<i>.png` crops drawn from the class templates; returns (path, label) pairs."""
    rng = np.random.default_rng(seed + 7)
    written: list[tuple[Path, str]] = []
    for index in classes if classes is not None else range(len(labels)):
        label = labels.labels[index]
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = folder / f"c{index}_{i}{ext}"
            ok = cv2.imwrite(str(path), noisy_crop(index, rng, seed))
            assert ok, path
            written.append((path, label))
    return written
