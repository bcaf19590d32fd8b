"""ONNX Runtime sessions that say which hardware they really run on.

onnxruntime-gpu lists CUDAExecutionProvider as available whether or not the machine has a GPU, a
driver, the CUDA runtime and cuDNN. Asking for it without them prints a screen of errors and then
silently runs on the CPU. The scanner PC operator needs the opposite: no noise when there is no
GPU, one actionable line when a GPU was asked for and cannot be used, and an honest answer about
which provider ran. So `auto` probes cheaply first (provider compiled in, NVIDIA driver loadable)
and only then tries CUDA with ONNX Runtime's logging turned down, and checks what it actually got.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import platform
import re
import threading
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from .bundle import BundleError

Provider = Literal["cpu", "cuda"]
PROVIDER_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")
CUDA_FIX = "install the GPU extra (pip install karyo[cuda]) and an NVIDIA driver, or use --provider cpu"

_CUDA_EP = "CUDAExecutionProvider"
_CPU_EP = "CPUExecutionProvider"
_ORT_DEFAULT_SEVERITY = 2  # onnxruntime's own default (warning)
_QUIET_SEVERITY = 4  # fatal only: hides the provider-bridge load errors during the CUDA attempt

# ORT wraps a failed CUDA call in its source location and a C++ template signature, a screen wide
# (seen on an H100 with the GPU hidden). The operator needs the library's own words.
_GPU_LIBRARY_FAILURE = re.compile(r"\b(CUDA|CUDNN|CUBLAS|CUBLASLT|CUFFT|CURAND|CUSPARSE|NCCL) failure (\d+): ([^;]*)")
_ORT_SOURCE_LOCATION = re.compile(r"\S*onnxruntime_src/\S+:\d+\s*")
_CPP_SIGNATURE = re.compile(r"\S*std::conditional_t<.*?\[with [^\]]*\]\s*")

# Session creation touches process-wide state (the default logger, DLL preloading, our cache), so
# it is serialized. `InferenceSession.run` itself is thread-safe and never takes this lock.
_LOCK = threading.RLock()
_cuda_failure: str | None = None  # why CUDA could not be used, learned once per process


class ProviderError(RuntimeError):
    """The requested execution provider cannot be used here; the message says what is missing and how to fix it."""


class InferenceError(RuntimeError):
    """onnxruntime failed while running a batch (e.g. GPU out of memory); one line, no ORT internals."""


def _driver_library() -> str | None:
    system = platform.system()
    if system == "Linux":
        return "libcuda.so.1"
    if system == "Windows":
        return "nvcuda.dll"
    return None  # macOS and others: no CUDA


def cuda_precheck() -> str | None:
    """Cheap checks that need no session: None if CUDA is worth trying, else the reason it is not."""
    if _CUDA_EP not in ort.get_available_providers():
        return "this onnxruntime build has no CUDA execution provider (onnxruntime-gpu is not installed)"
    library = _driver_library()
    if library is None:
        return f"CUDA is not supported on {platform.system()}"
    try:
        ctypes.CDLL(library)
    except OSError:
        return f"no NVIDIA driver ({library} not found)"
    return None


def _diagnose_cuda_load() -> str:
    """After a silent fallback, load the CUDA provider library ourselves: the OS error names the missing piece."""
    capi = Path(ort.__file__).parent / "capi"
    names = ["onnxruntime_providers_cuda.dll"] if platform.system() == "Windows" else ["libonnxruntime_providers_cuda.so"]
    for name in names:
        candidate = capi / name
        if candidate.is_file():
            try:
                ctypes.CDLL(str(candidate))
            except OSError as exc:
                return f"CUDA EP failed to load: {str(exc).strip()}"
    return "CUDA EP failed to initialize (CUDA runtime/cuDNN missing or driver too old for this onnxruntime-gpu)"


def _preload_cuda_libraries() -> None:
    """Let pip-installed CUDA/cuDNN wheels (the karyo[cuda] extra) be found; print nothing."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
        preload()


def _session_options(threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # session warnings (e.g. node placement) are not the operator's business
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return options


def _new_session(model_path: Path, providers: list, threads: int | None) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(model_path), sess_options=_session_options(threads), providers=providers)
    except (ValueError, TypeError):
        raise
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/NoSuchFile types
        raise BundleError(f"{model_path}: cannot be loaded by onnxruntime ({_one_line(exc)})") from None


def _printed_ep_error(text: str) -> str | None:
    """onnxruntime *prints* (to stdout) why an EP failed before retrying on the CPU; recover that reason."""
    for line in text.splitlines():
        if line.startswith("EP Error"):
            detail = condense_ort_message(line[len("EP Error") :].lstrip(": ").split(" when using ")[0])
            return f"CUDA EP failed: {detail}" if detail else None
    return None


def _try_cuda_session(model_path: Path, threads: int | None) -> tuple[ort.InferenceSession | None, str | None]:
    """A CUDA session, or (None, reason). The CPU session ORT falls back to is discarded by the caller.

    ORT's fallback prints a banner on stdout (which would corrupt `karyo classify --json`) and logs
    load errors on stderr; both are captured here and turned into the one-line reason instead.
    """
    _preload_cuda_libraries()
    # TF32 stays on (ORT's default): "fp32" convolutions on Ampere and newer round the inputs to a 10-bit
    # mantissa, probabilities move by ~6e-4 on an H100 and top-1 did not move on 1,747 real crops.
    # use_tf32=0 made cuDNN's frontend log "No execution plans support the graph" on every new shape.
    cuda_options = {"cudnn_conv_algo_search": "HEURISTIC"}
    printed = io.StringIO()
    ort.set_default_logger_severity(_QUIET_SEVERITY)
    try:
        with contextlib.redirect_stdout(printed):
            session = _new_session(model_path, [(_CUDA_EP, cuda_options), _CPU_EP], threads)
    finally:
        ort.set_default_logger_severity(_ORT_DEFAULT_SEVERITY)
    if session.get_providers()[0] == _CUDA_EP:
        session.disable_fallback()  # a failing GPU run must raise, not print and quietly move to the CPU
        return session, None
    return None, _printed_ep_error(printed.getvalue()) or _diagnose_cuda_load()


def create_session(
    model_path: str | Path, provider: str = "auto", threads: int | None = None
) -> tuple[ort.InferenceSession, Provider]:
    """Open model_path on the requested provider; returns the session and the provider it really uses.

    `auto` prefers CUDA and falls back to the CPU quietly (the reason is available from
    :func:`cuda_status`); `cuda` raises :class:`ProviderError` instead of falling back.
    """
    global _cuda_failure
    if provider not in PROVIDER_CHOICES:
        raise ValueError(f"provider must be one of {', '.join(PROVIDER_CHOICES)}, got {provider!r}")
    model_path = Path(model_path)
    if threads is None:
        threads = default_threads()
    if not model_path.is_file():
        raise BundleError(f"{model_path}: model file missing")
    with _LOCK:
        if provider in ("auto", "cuda"):
            reason = _cuda_failure or cuda_precheck()
            if reason is None:
                session, reason = _try_cuda_session(model_path, threads)
                if session is not None:
                    return session, "cuda"
            _cuda_failure = reason
            if provider == "cuda":
                raise ProviderError(f"CUDA requested but unavailable: {reason}; {CUDA_FIX}")
    return _new_session(model_path, [_CPU_EP], threads), "cpu"  # CPU sessions touch no shared state


def cuda_status() -> str | None:
    """Why CUDA is not used in this process (None if it is usable or was never probed successfully yet)."""
    with _LOCK:
        return _cuda_failure or cuda_precheck()


def probe_cuda(model_path: str | Path) -> str | None:
    """None if a CUDA session of model_path really runs on the GPU, else why not (opens a session to find out).

    `cuda_status` alone only knows the cheap checks until a session has been tried: a machine with
    the driver but its GPU hidden or taken passes them. `karyo info` must not call that usable.
    """
    try:
        create_session(model_path, "cuda", threads=1)  # refuses instead of opening a CPU session nobody uses
    except ProviderError:
        return cuda_status()
    except BundleError as exc:
        return f"not probed: {exc}"
    return None


def reset_cuda_probe() -> None:
    """Forget a cached CUDA failure (tests; a driver installed while the process runs)."""
    global _cuda_failure
    with _LOCK:
        _cuda_failure = None


def input_name(session: ort.InferenceSession) -> str:
    return session.get_inputs()[0].name


def output_name(session: ort.InferenceSession) -> str:
    names = [o.name for o in session.get_outputs()]
    return "probabilities" if "probabilities" in names else names[0]


def n_outputs(session: ort.InferenceSession) -> int | None:
    shape = next(o.shape for o in session.get_outputs() if o.name == output_name(session))
    last = shape[-1] if shape else None
    return last if isinstance(last, int) else None


def run_probabilities(session: ort.InferenceSession, batch: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities for an NHWC float32 batch, run in chunks of batch_size. Thread-safe."""
    batch = np.asarray(batch, dtype=np.float32)
    if batch.ndim != 4:
        raise ValueError(f"expected an NHWC batch, got shape {batch.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    feed_name, fetch_name = input_name(session), output_name(session)
    if len(batch) == 0:
        return np.zeros((0, n_outputs(session) or 0), dtype=np.float32)
    chunks = []
    for start in range(0, len(batch), batch_size):
        chunk = np.ascontiguousarray(batch[start : start + batch_size])
        try:
            outputs = session.run([fetch_name], {feed_name: chunk})
        except Exception as exc:
            if not type(exc).__module__.startswith("onnxruntime"):
                raise
            provider = session.get_providers()[0].replace("ExecutionProvider", "")
            raise InferenceError(f"inference failed on {provider} for a batch of {len(chunk)}: {_one_line(exc)}") from None
        chunks.append(np.asarray(outputs[0], dtype=np.float32))
    return np.concatenate(chunks, axis=0)


def condense_ort_message(text: str, limit: int = 400) -> str:
    """One line an operator can act on: a GPU library's own failure text, without ORT's source paths.

    ORT messages span lines ("Got invalid dimensions ... / index: 1 Got: 8 Expected: 16 / Please
    fix"), and CUDA failures come wrapped in file names and template signatures.
    """
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    failure = _GPU_LIBRARY_FAILURE.search(text)
    if failure:
        text = f"{failure.group(1)} failure {failure.group(2)}: {failure.group(3).strip()}"
    else:
        text = _CPP_SIGNATURE.sub("", _ORT_SOURCE_LOCATION.sub("", text)).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(exc: BaseException, limit: int = 400) -> str:
    return condense_ort_message(str(exc), limit) or type(exc).__name__


def default_threads() -> int | None:
    """Threads from KARYO_THREADS, if set (lets an admin cap CPU use on a shared scanner PC)."""
    value = os.environ.get("KARYO_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None
