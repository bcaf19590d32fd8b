"""Classifier architectures: the reference study's DCNN and a compact network built for INT8 on CPU.

Both take one gray NHWC float32 tensor named "image" (the output of `karyo.runtime.preprocess`)
and end in a softmax, so the ONNX graph's output already is the probability vector the runtime
reports. The `edge` network only uses ops that every ONNX runtime quantizes well (conv,
batch norm folded into conv, ReLU, max and average pooling, dense): no squeeze-excite,
no swish, no layer norm.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import tempfile
from pathlib import Path
from typing import Callable

ARCHS: tuple[str, ...] = ("edge", "seed-dcnn")
DEFAULT_ARCH = "edge"
# Model input, height x width. seed-dcnn is the study's network and only meaningful at its own
# 300 px square. edge uses a tall box: chromosomes are 3-5x longer than wide, so a square spends
# two thirds of its pixels on padding. At 96x32 a chromosome 1 of a 120 px crop keeps 96 px of its
# length (64 in a 64 px square) for fewer pixels (3,072 vs 4,096); its training-step time against
# the square is in the README (Design).
DEFAULT_INPUT: dict[str, tuple[int, int]] = {"edge": (96, 32), "seed-dcnn": (300, 300)}

_threads_configured = False


def available_cores() -> int:
    """Cores this process may use (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def requested_keras_backend() -> str:
    """The backend Keras will load, in Keras' own order: KERAS_BACKEND, else keras.json's, else tensorflow.

    Read without importing Keras, because TensorFlow's quiet import and thread caps must come first.
    """
    name = os.environ.get("KERAS_BACKEND", "").strip().lower()
    if name:
        return name
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    try:
        config = json.loads((home / "keras.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "tensorflow"
    backend = config.get("backend") if isinstance(config, dict) else None
    return str(backend).strip().lower() if backend else "tensorflow"


def configure_backend(threads: int | None = None) -> str:
    """Prepare the Keras backend that builds and trains the models; returns its name.

    TensorFlow, the default, gets its quiet import and thread caps. Training also runs unchanged
    under Keras' JAX backend (`KERAS_BACKEND=jax`; README, On a GPU): a lab whose GPU has no
    TensorFlow build for its CUDA trains there, then converts under TensorFlow. JAX sizes its own
    thread pools; it gets XLA's deterministic GPU ops (`ask_xla_for_deterministic_gpu_ops`).
    """
    backend = requested_keras_backend()
    if backend == "tensorflow":
        configure_tensorflow(threads)
    elif backend == "jax":
        ask_xla_for_deterministic_gpu_ops()
    return backend


# Two trainings of the same command under JAX on an H100 ended up to 2.3 apart in a weight and 0.9
# points apart in held-out accuracy (pampaj7, 462 crops); with this flag they were bit-identical and
# took no longer (61 and 70 s against 63 and 72 s): a lab re-running a training gets the same model.
XLA_DETERMINISTIC_GPU_OPS = "--xla_gpu_deterministic_ops=true"


def ask_xla_for_deterministic_gpu_ops() -> None:
    """Make a seeded JAX training on a GPU repeatable, as it is on a CPU, unless XLA_FLAGS already says otherwise.

    XLA reads its flags when JAX first starts a backend, so this must run before any JAX computation.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_gpu_deterministic_ops" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_DETERMINISTIC_GPU_OPS}".strip()


def backend_version(backend: str) -> str:
    """Version of the package behind a Keras backend, for the model folder's provenance."""
    if backend == "tensorflow":
        import tensorflow as tf

        return str(tf.__version__)
    from importlib import metadata

    try:
        return metadata.version(backend)
    except metadata.PackageNotFoundError:
        return "unknown"


def require_tensorflow_backend(task: str) -> None:
    """Export goes through tf2onnx, which reads TensorFlow graphs: refuse other backends in one line, early."""
    backend = requested_keras_backend()
    if backend != "tensorflow":
        source = "KERAS_BACKEND" if os.environ.get("KERAS_BACKEND", "").strip() else "keras.json"
        raise ValueError(
            f"{task} needs Keras' TensorFlow backend, but {source} selects {backend}: run it with "
            f"KERAS_BACKEND=tensorflow (a model trained under {backend} loads there unchanged)"
        )


def configure_tensorflow(threads: int | None = None) -> None:
    """Quiet TF logging, ask for its oneDNN kernels and cap its thread pools to the cores we have.

    TensorFlow sizes its pools to the machine, which oversubscribes shared or containerized CPUs;
    the pools can only be set before the first op runs, hence a guarded one-time call.
    """
    global _threads_configured
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    prefer_onednn_kernels()
    if _threads_configured:
        return
    tf = import_tensorflow_quietly()

    cores = threads or available_cores()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cores)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, cores))
    except RuntimeError:  # TF already initialized by the caller: keep its settings
        pass
    _threads_configured = True


# What TensorFlow prints on every start of a CPU-only machine, before its log level applies: the
# oneDNN notice, the missing CUDA driver, the failed cuInit. Users read these as failures.
_TF_START_NOISE = re.compile(
    r"(absl::InitializeLog|oneDNN custom operations|cudart_stub|Could not find cuda drivers|failed call to cuInit|"
    r"cpu_feature_guard|rebuild TensorFlow with the appropriate compiler flags|To enable the following instructions)"
)


# platform.machine() of the CPUs oneDNN is asked for on (x86-64 as Linux and as Windows name it)
ONEDNN_MACHINES = ("x86_64", "amd64")


def prefer_onednn_kernels() -> None:
    """Ask TensorFlow for its oneDNN CPU kernels on x86, unless TF_ENABLE_ONEDNN_OPTS already says.

    TensorFlow switches them on by itself only on CPUs with AVX-512 VNNI or newer; on any other (an
    AMD EPYC with AVX2 only, measured) it trains on its Eigen kernels, which took 1.4 to 2 times the
    CPU time per `edge` training step on 2 cores of that EPYC (`benchmarks/training_speed.py`). Read
    once, when TensorFlow loads, so this runs before that. `TF_ENABLE_ONEDNN_OPTS=0` keeps Eigen.
    """
    if platform.machine().lower() in ONEDNN_MACHINES:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def tensorflow_cpu_kernels() -> str | None:
    """"onednn" or "eigen": which CPU kernels the loaded TensorFlow trains with, for the training record
    (the two round differently, so their weights differ in the last digits). None when unknown."""
    if "tensorflow" not in sys.modules:
        return None
    try:
        from tensorflow.python.util import _pywrap_util_port  # private, hence the guard

        return "onednn" if _pywrap_util_port.IsMklEnabled() else "eigen"
    except (ImportError, AttributeError):
        return None


def import_tensorflow_quietly():
    """Import TensorFlow and probe its devices with stderr captured, replaying all but the start-up noise.

    The noise comes from C++ at load time, so it bypasses Python logging and TF_CPP_MIN_LOG_LEVEL;
    the only lever is the process's stderr descriptor, restored before anything else runs.
    """
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        return tf
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines() if line.strip() and not _TF_START_NOISE.search(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)
    return tf


def default_input_size(arch: str) -> tuple[int, int]:
    """(height, width) of `arch`'s input unless the user asks for another."""
    _check_arch(arch)
    return DEFAULT_INPUT[arch]


def parse_input_size(text: str) -> tuple[int, int]:
    """ "64" -> (64, 64); "96x32" -> (96, 32) (height x width, as the README writes sizes)."""
    parts = text.lower().replace(" ", "").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"input size {text!r}: write one number (a square) or HEIGHTxWIDTH, like 96x32") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 16 or max(values) > 1024:
        raise ValueError(f"input size {text!r}: need HEIGHTxWIDTH, each 16..1024 px")
    return values[0], values[1]


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHS)}")


def build_seed_dcnn(n_classes: int, input_size: tuple[int, int] = (300, 300)):
    """The study's DCNN, layer for layer: 3 x (conv 3x3 + relu, max-pool 2x2), dense 1024-1024-512, softmax.

    Kept faithful (valid padding, no batch norm, no dropout) because it is the reference that
    `edge` has to beat; at 300 px it has about 82M parameters, 98% of them in the first dense layer.
    """
    configure_backend()
    import keras
    from keras import layers

    inputs = keras.Input(shape=(*input_size, 1), name="image")
    x = inputs
    for index, filters in enumerate((32, 64, 64), start=1):
        x = layers.Conv2D(filters, 3, activation="relu", name=f"conv{index}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = layers.Flatten(name="flatten")(x)
    for index, units in enumerate((1024, 1024, 512), start=1):
        x = layers.Dense(units, activation="relu", name=f"dense{index}")(x)
    x = layers.Dense(n_classes, name="logits")(x)
    outputs = layers.Activation("softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="seed_dcnn")


# Keras' default 0.99 needs hundreds of steps before the inference statistics match the data; a
# short run (the demo, a small lab's data set) would export a model whose BN layers are still at
# their initial values. 0.9 converges in ~30 steps and is stable for long runs too.
BN_MOMENTUM = 0.9


def _conv_bn_relu(x, filters: int, name: str):
    from keras import layers

    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


# Channels per stage; each stage is two 3x3 conv + BN + ReLU, stages joined by 2x2 max-pooling.
EDGE_STAGES: tuple[int, ...] = (16, 32, 64, 128)

# How edge turns its last feature map into class scores. "pool" averages over the whole map, so a
# band pattern counts the same wherever it sits. "rows" averages across the width only and keeps
# one feature vector per row: the preprocessing puts a chromosome's length along the box's height,
# so a row is a place along the chromosome (near the p-arm end, the centromere, the q-arm end) and
# the head can weigh where bands are, like an ideogram does. Case-wise 5-fold
# (benchmarks/ACCURACY.md): rows 96.86% INT8 crops / 99.31% assembled against 96.57 / 99.21 for
# pool (that run without turning crops upright, which changes nothing on these straightened
# crops: folds 1-2 with and without), better in every fold, for 12x the head's weights (37k more,
# 0.33M in all) and no measurable time.
EDGE_HEADS: tuple[str, ...] = ("pool", "rows")
DEFAULT_EDGE_HEAD = "rows"


def build_edge(
    n_classes: int,
    input_size: tuple[int, int] = (96, 32),
    width: float = 1.0,
    dropout: float = 0.2,
    head: str = DEFAULT_EDGE_HEAD,
):
    """Compact CNN for the scanner PC: 0.33M parameters, 39M multiply-adds at 96x32 (seed-dcnn: 82M, 692M).

    Plain 3x3 convolutions, narrow and doubling per stage (VGG-like), then a head that averages
    across the width and keeps the places along the chromosome (`head="rows"`, see EDGE_HEADS;
    `head="pool"` averages everything, the earlier design). Measured against a MobileNet-style depthwise
    design of the same cost: full convolutions train 1.3x faster per image on a CPU (TensorFlow's
    depthwise gradients are slow there) and quantize to INT8 just as well. Only ops that every
    ONNX runtime quantizes well: conv (batch norm folds in), ReLU, max-pool, average pool, dense.
    """
    configure_backend()
    import keras
    from keras import layers

    def w(filters: int) -> int:
        return max(8, int(round(filters * width / 8)) * 8)

    inputs = keras.Input(shape=(*input_size, 1), name="image")
    x = inputs
    for stage, filters in enumerate(EDGE_STAGES, start=1):
        if stage > 1:
            x = layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
        x = _conv_bn_relu(x, w(filters), f"stage{stage}a")
        x = _conv_bn_relu(x, w(filters), f"stage{stage}b")
    if head == "rows":
        x = layers.AveragePooling2D((1, x.shape[2]), name="row_pool")(x)
        x = layers.Flatten(name="rows")(x)
    elif head == "pool":
        x = layers.GlobalAveragePooling2D(name="pool")(x)
    else:
        raise ValueError(f"unknown head {head!r}: use one of {', '.join(EDGE_HEADS)}")
    if dropout > 0:
        x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(n_classes, name="logits")(x)
    outputs = layers.Activation("softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="edge")


_BUILDERS: dict[str, Callable[..., object]] = {"edge": build_edge, "seed-dcnn": build_seed_dcnn}


def check_edge_options(arch: str, width: float, head: str | None = None) -> None:
    """Reject a channel multiplier or head `arch` cannot take, before anything slow starts.

    `head=None` means the architecture's own (edge: DEFAULT_EDGE_HEAD); naming one for seed-dcnn is an error.
    """
    _check_arch(arch)
    if head is not None and head not in EDGE_HEADS:
        raise ValueError(f"unknown head {head!r}: use one of {', '.join(EDGE_HEADS)}")
    if arch != "edge" and head is not None:
        raise ValueError(f"--head only applies to edge; {arch} is built as published")
    if not 0.25 <= width <= 4.0:
        raise ValueError(f"width {width}: use a channel multiplier between 0.25 and 4")
    if arch != "edge" and width != 1.0:
        raise ValueError(f"--width only applies to edge; {arch} is built as published")


def edge_head(arch: str, head: str | None) -> str | None:
    """The head a model of `arch` really gets: edge's default when none is named, None for seed-dcnn."""
    return (head or DEFAULT_EDGE_HEAD) if arch == "edge" else None


def build_model(
    arch: str,
    n_classes: int,
    input_size: tuple[int, int] | int | None = None,
    width: float = 1.0,
    head: str | None = None,
):
    """A fresh, uncompiled keras.Model for `arch` with input "image" (NHWC, 1 channel) and softmax output.

    `input_size` is (height, width), or one number for a square. `width` multiplies `edge`'s
    channels (rounded to multiples of 8) and `head` picks its head (None: rows); `seed-dcnn` is the
    study's network and has neither knob.
    """
    check_edge_options(arch, width, head)
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes, got {n_classes}")
    if input_size is None:
        input_size = DEFAULT_INPUT[arch]
    elif isinstance(input_size, int):
        input_size = (input_size, input_size)
    if min(input_size) < 16:
        raise ValueError(f"input size {input_size[0]}x{input_size[1]} px is too small (minimum 16)")
    options = {"width": width, "head": edge_head(arch, head)} if arch == "edge" else {}
    return _BUILDERS[arch](n_classes, tuple(input_size), **options)
