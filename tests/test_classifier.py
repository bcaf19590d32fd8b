"""Classifier and sessions: exact answers vs numpy, honest provider/precision choice, bad crops isolated, thread safety."""

from __future__ import annotations

import json
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from tiny_models import class_template, make_bundle, write_labeled_folder

from karyo.runtime import session as session_module
from karyo.runtime.bundle import MANIFEST, BundleError, load_bundle, write_manifest
from karyo.runtime.classifier import Classifier, choose_auto_precision
from karyo.runtime.labels import scheme
from karyo.runtime.preprocess import ImageError, preprocess_path
from karyo.runtime.session import ProviderError, create_session, cuda_precheck, run_probabilities


@pytest.fixture(autouse=True)
def fresh_cuda_probe():
    session_module.reset_cuda_probe()
    yield
    session_module.reset_cuda_probe()


def _tensors(paths, spec) -> np.ndarray:
    return np.stack([preprocess_path(p, spec) for p in paths])


def test_predictions_equal_numpy_reference(tiny_bundle, labeled_crops):
    _, crops = labeled_crops
    paths = [p for p, _ in crops]
    clf = Classifier(tiny_bundle.path, precision="fp32", provider="cpu", threads=1)
    expected = tiny_bundle.reference(_tensors(paths, tiny_bundle.spec), "fp32")
    predictions = clf.predict_paths(paths, top_k=3, batch_size=5)
    got = np.stack([p.probs for p in predictions])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [p.label for p in predictions] == [label for _, label in crops]  # the templates are separable
    first = predictions[0]
    assert first.error is None and first.probability == pytest.approx(float(expected[0].max()), abs=1e-5)
    assert [label for label, _ in first.top_k] == [tiny_bundle.labels.labels[i] for i in np.argsort(-expected[0])[:3]]
    assert json.loads(json.dumps(first.to_dict()))["top_k"][0]["label"] == first.label
    arrays = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in paths]
    np.testing.assert_allclose(clf.predict_arrays(arrays, batch_size=64), expected, atol=1e-5)


def test_batch_size_does_not_change_answers(tiny_bundle, labeled_crops):
    paths = [p for p, _ in labeled_crops[1]]
    clf = Classifier(tiny_bundle.path, precision="int8", provider="cpu", threads=1)
    one = np.stack([p.probs for p in clf.predict_paths(paths, batch_size=1)])
    many = np.stack([p.probs for p in clf.predict_paths(paths, batch_size=64)])
    np.testing.assert_allclose(one, many, atol=1e-6)
    np.testing.assert_allclose(one, tiny_bundle.reference(_tensors(paths, tiny_bundle.spec), "int8"), atol=1e-5)


def test_auto_provider_falls_back_to_cpu_and_says_why(tiny_bundle):
    reason = cuda_precheck()
    if reason is None:
        pytest.skip("this machine has a usable-looking CUDA setup; the fallback is covered by the mocked tests")
    clf = Classifier(tiny_bundle.path, provider="auto")
    assert clf.provider == "cpu" and clf.cuda_reason == reason
    assert clf.precision == "int8" and clf.precision_reason == "int8 is preferred on cpu"
    assert clf.describe()["cuda_unavailable"] == reason


def test_cuda_requested_without_gpu_is_a_provider_error(tiny_bundle):
    if cuda_precheck() is None:
        pytest.skip("CUDA looks available here")
    with pytest.raises(ProviderError, match=r"CUDA requested but unavailable: .*pip install karyo\[cuda\]"):
        create_session(tiny_bundle.path / "model.fp32.onnx", "cuda")
    with pytest.raises(ProviderError):
        Classifier(tiny_bundle.path, provider="cuda")


class _FakeCudaSession:
    def __init__(self, real):
        self._real = real

    def get_providers(self):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_cuda_success_branch_reports_cuda_and_prefers_fp16(tiny_bundle, monkeypatch):
    calls = []

    def fake_try(model_path, threads):
        calls.append(Path(model_path).name)
        real, _ = create_session(model_path, "cpu", threads)
        return _FakeCudaSession(real), None

    monkeypatch.setattr(session_module, "cuda_precheck", lambda: None)
    monkeypatch.setattr(session_module, "_try_cuda_session", fake_try)
    session, used = create_session(tiny_bundle.path / "model.fp32.onnx", "cuda")
    assert used == "cuda"
    clf = Classifier(tiny_bundle.path, provider="auto")
    assert (clf.provider, clf.precision, clf.cuda_reason) == ("cuda", "fp16", None)
    assert calls == ["model.fp32.onnx", "model.fp16.onnx"]


def test_real_cuda_attempt_that_falls_back_is_detected(tiny_bundle, monkeypatch):
    """ORT quietly hands back a CPU session: we must notice via get_providers() and name the missing library."""
    monkeypatch.setattr(session_module, "cuda_precheck", lambda: None)
    session, reason = session_module._try_cuda_session(tiny_bundle.path / "model.fp32.onnx", 1)
    if session is not None:
        pytest.skip("CUDA really works here")
    assert reason.startswith("CUDA EP")
    with pytest.raises(ProviderError, match="CUDA EP"):
        create_session(tiny_bundle.path / "model.fp32.onnx", "cuda")


def test_cuda_load_failure_falls_back_once_and_is_cached(tiny_bundle, monkeypatch):
    attempts = []

    def failing_try(model_path, threads):
        attempts.append(1)
        return None, "CUDA EP failed to load: libcublasLt.so.13: cannot open shared object file"

    monkeypatch.setattr(session_module, "cuda_precheck", lambda: None)
    monkeypatch.setattr(session_module, "_try_cuda_session", failing_try)
    clf = Classifier(tiny_bundle.path, provider="auto")  # expected cuda+fp16, got cpu: re-picks int8
    assert (clf.provider, clf.precision) == ("cpu", "int8")
    assert "libcublasLt" in clf.cuda_reason
    with pytest.raises(ProviderError, match="libcublasLt.so.13"):
        create_session(tiny_bundle.path / "model.fp32.onnx", "cuda")
    assert len(attempts) == 1  # later sessions do not retry (and re-log) a known failure


# What onnxruntime-gpu 1.31.1 printed on an H100 with CUDA_VISIBLE_DEVICES="" (one line).
_H100_HIDDEN_GPU = (
    "EP Error /onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:154 std::conditional_t<THRW, void, "
    "onnxruntime::common::Status> onnxruntime::CudaCall(ERRTYPE, const char*, const char*, SUCCTYPE, const char*, "
    "const char*, int) [with ERRTYPE = cudaError; bool THRW = true; SUCCTYPE = cudaError; std::conditional_t<THRW, "
    "void, common::Status> = void] /onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:146 "
    "std::conditional_t<THRW, void, onnxruntime::common::Status> onnxruntime::CudaCall(ERRTYPE, const char*, const "
    "char*, SUCCTYPE, const char*, const char*, int) [with ERRTYPE = cudaError; bool THRW = true; SUCCTYPE = "
    "cudaError; std::conditional_t<THRW, void, common::Status> = void] CUDA failure 100: no CUDA-capable device is "
    "detected ; GPU=-1 ; hostname=vm ; file=/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_execution_provider.cc "
    "; line=355 ; expr=cudaSetDevice(info_.device_id); when using ['CUDAExecutionProvider', 'CPUExecutionProvider']"
)


def test_printed_cuda_failure_is_cut_down_to_the_library_message():
    printed = "\n".join(["*************** EP Error ***************", _H100_HIDDEN_GPU, "Falling back to ['CPUExecutionProvider'] and retrying."])
    assert session_module._printed_ep_error(printed) == "CUDA EP failed: CUDA failure 100: no CUDA-capable device is detected"
    # without a library failure code only ORT's source paths and template signatures go
    load = "/onnxruntime_src/onnxruntime/core/graph/model.cc:180 Unsupported model IR version: 11, max supported IR version: 10"
    assert session_module.condense_ort_message(load) == "Unsupported model IR version: 11, max supported IR version: 10"
    assert session_module.condense_ort_message("Got: 8\n Expected: 16\n", limit=12) == "Got: 8 Ex..."


def test_cuda_really_runs_and_agrees_with_the_cpu(tiny_bundle, labeled_crops):
    """Runs where a GPU is usable (passed on an H100 with onnxruntime-gpu 1.31.1); skips elsewhere, saying why."""
    reason = session_module.probe_cuda(tiny_bundle.path / "model.fp32.onnx")
    if reason is not None:
        pytest.skip(f"no usable CUDA here: {reason}")
    tensors = _tensors([p for p, _ in labeled_crops[1]], tiny_bundle.spec)
    for precision in ("fp32", "fp16"):
        model = tiny_bundle.path / f"model.{precision}.onnx"
        gpu, used = create_session(model, "cuda")
        cpu, _ = create_session(model, "cpu")
        assert used == "cuda" and gpu.get_providers()[0] == "CUDAExecutionProvider"
        on_gpu, on_cpu = run_probabilities(gpu, tensors), run_probabilities(cpu, tensors)
        # TF32 convolutions (fp32 on an H100 moved probabilities by 6e-4) and true fp16 arithmetic
        np.testing.assert_allclose(on_gpu, on_cpu, atol=3e-3)
        assert (on_gpu.argmax(axis=1) == on_cpu.argmax(axis=1)).all()


def test_info_reports_cuda_from_a_real_session_not_the_cheap_checks(tiny_bundle, monkeypatch):
    from karyo.runtime.cli_info import bundle_info

    precheck = cuda_precheck()
    if precheck is not None:  # this machine: the cheap checks already say no, and info repeats them
        assert bundle_info(tiny_bundle.path)["cuda"] == precheck
    monkeypatch.setattr(session_module, "cuda_precheck", lambda: None)  # a driver is there...
    monkeypatch.setattr(session_module, "_try_cuda_session", lambda path, threads: (None, "CUDA EP failed: CUDA failure 100: no CUDA-capable device is detected"))
    session_module.reset_cuda_probe()
    assert bundle_info(tiny_bundle.path)["cuda"] == "CUDA EP failed: CUDA failure 100: no CUDA-capable device is detected"

    def working(model_path, threads):
        real, _ = create_session(model_path, "cpu", threads)
        return _FakeCudaSession(real), None

    monkeypatch.setattr(session_module, "_try_cuda_session", working)
    session_module.reset_cuda_probe()
    assert bundle_info(tiny_bundle.path)["cuda"] == "usable"


@pytest.mark.parametrize(
    "have,provider,expected",
    [(("fp32", "fp16", "int8"), "cpu", "int8"), (("fp32", "fp16"), "cpu", "fp32"), (("fp16",), "cpu", "fp16"),
     (("fp32", "fp16", "int8"), "cuda", "fp16"), (("fp32", "int8"), "cuda", "fp32")],
)
def test_auto_precision_order(have, provider, expected):
    chosen, reason = choose_auto_precision(list(have), provider)
    assert chosen == expected and provider in reason


def test_auto_precision_falls_back_to_fp32_and_explicit_missing_is_a_bundle_error(tmp_path):
    bundle = make_bundle(tmp_path / "b", precisions=("fp32", "fp16"))
    clf = Classifier(bundle.path, provider="cpu", warmup=False)
    assert clf.precision == "fp32" and clf.precision_reason == "bundle has no int8 model; using fp32 on cpu"
    with pytest.raises(BundleError, match="no int8 model"):
        Classifier(bundle.path, precision="int8", provider="cpu")


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 32)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("workers", [1, 3])
def test_bad_files_get_errors_and_the_rest_is_classified(tmp_path, workers):
    bundle = make_bundle(tmp_path / "b", precisions=("fp32",), max_pixels=20_000)
    good = write_labeled_folder(tmp_path / "good", bundle.labels, per_class=1, classes=[0, 5, 22])
    bad = {
        "empty.png": b"",
        "truncated.tiff": cv2.imencode(".tiff", class_template(3))[1].tobytes()[:80],
        "text.png": b"just some notes\n",
        "bomb.png": _png_claiming(300_000, 300_000),
        "large.png": cv2.imencode(".png", np.full((200, 200), 255, np.uint8))[1].tobytes(),  # 40k px > 20k limit
        "blank.png": cv2.imencode(".png", np.full((60, 24), 245, np.uint8))[1].tobytes(),  # paper, no chromosome
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    paths = [good[0][0], tmp_path / "empty.png", tmp_path / "truncated.tiff", good[1][0], tmp_path / "text.png",
             tmp_path / "bomb.png", tmp_path / "large.png", tmp_path / "missing.png", tmp_path / "blank.png", good[2][0]]
    predictions = Classifier(bundle.path, provider="cpu", workers=workers).predict_paths(paths, batch_size=4)
    assert [p.path for p in predictions] == [str(p) for p in paths]
    errors = {Path(p.path).name: p.error for p in predictions if p.error}
    assert set(errors) == {"empty.png", "truncated.tiff", "text.png", "bomb.png", "large.png", "missing.png", "blank.png"}
    assert "empty file" in errors["empty.png"] and "pixel limit" in errors["large.png"]
    assert "no chromosome in the image" in errors["blank.png"]
    assert all(message.startswith(str(tmp_path)) for message in errors.values())  # each names its file
    for p in predictions:
        if p.error:
            assert p.label is None and p.probs is None and p.top_k == []
    ok = [p for p in predictions if p.ok]
    assert [p.label for p in ok] == [label for _, label in good]
    expected = bundle.reference(_tensors([g for g, _ in good], bundle.spec))
    np.testing.assert_allclose(np.stack([p.probs for p in ok]), expected, atol=1e-5)


def test_zero_size_crop_among_arrays(tiny_bundle):
    clf = Classifier(tiny_bundle.path, precision="fp32", provider="cpu")
    crops = [class_template(2), np.zeros((0, 7), np.uint8), class_template(9)]
    predictions = clf.predict_images(crops, names=["a", "empty-crop", "c"])
    assert [p.label for p in predictions] == ["3", None, "10"]
    assert predictions[1].error.startswith("empty-crop: zero-size")
    with pytest.raises(ImageError, match="image 1: zero-size"):
        clf.predict_arrays(crops)


def test_eight_threads_get_identical_answers(tiny_bundle, labeled_crops):
    paths = [p for p, _ in labeled_crops[1]]
    clf = Classifier(tiny_bundle.path, precision="int8", provider="cpu", threads=1)
    reference = np.stack([p.probs for p in clf.predict_paths(paths, batch_size=16)])

    def work(_):
        return [np.stack([p.probs for p in clf.predict_paths(paths, batch_size=16)]) for _ in range(3)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = [r for batch in pool.map(work, range(8)) for r in batch]
    assert len(results) == 24
    for result in results:
        np.testing.assert_array_equal(result, reference)


def test_concurrent_session_creation(tiny_bundle):
    with ThreadPoolExecutor(max_workers=4) as pool:
        opened = list(pool.map(lambda _: create_session(tiny_bundle.path / "model.fp32.onnx", "auto", 1), range(4)))
    assert {used for _, used in opened} == {"cpu"} or {used for _, used in opened} == {"cuda"}


def test_thread_setting_reaches_the_session(tiny_bundle):
    session, _ = create_session(tiny_bundle.path / "model.fp32.onnx", "cpu", threads=1)
    assert session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(ValueError):
        create_session(tiny_bundle.path / "model.fp32.onnx", "cpu", threads=0)


def test_karyo_threads_environment_caps_threads(tiny_bundle, monkeypatch):
    monkeypatch.setenv("KARYO_THREADS", "1")
    session, _ = create_session(tiny_bundle.path / "model.fp32.onnx", "cpu")
    assert session.get_session_options().intra_op_num_threads == 1
    monkeypatch.setenv("KARYO_THREADS", "lots")  # nonsense is ignored, not fatal
    session, _ = create_session(tiny_bundle.path / "model.fp32.onnx", "cpu")
    assert session.get_session_options().intra_op_num_threads == 0  # ORT default: all cores


def test_run_probabilities_shapes(tiny_bundle):
    session, _ = create_session(tiny_bundle.path / "model.fp32.onnx", "cpu")
    assert run_probabilities(session, np.zeros((0, 16, 16, 1), np.float32)).shape == (0, 24)
    probs = run_probabilities(session, np.zeros((130, 16, 16, 1), np.float32), batch_size=64)
    assert probs.shape == (130, 24) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="NHWC"):
        run_probabilities(session, np.zeros((16, 16, 1), np.float32))


def test_model_that_disagrees_with_manifest_is_refused(tmp_path):
    bundle = make_bundle(tmp_path / "b", precisions=("fp32",))
    manifest = load_bundle(bundle.path).manifest
    manifest.labels = scheme("seed32")
    write_manifest(bundle.path, manifest)
    with pytest.raises(BundleError, match="outputs 24 classes, manifest lists 32 labels"):
        Classifier(bundle.path, provider="cpu")


def test_garbage_model_file_is_a_bundle_error(tmp_path):
    bundle = make_bundle(tmp_path / "b", precisions=("fp32",))
    (bundle.path / "model.fp32.onnx").write_bytes(b"\x00garbage" * 20)
    write_manifest(bundle.path, load_bundle(bundle.path, verify=False).manifest)
    with pytest.raises(BundleError, match="cannot be loaded by onnxruntime"):
        Classifier(bundle.path, provider="cpu")
    assert (bundle.path / MANIFEST).is_file()


def test_ort_fallback_banner_is_captured_not_printed(tiny_bundle, monkeypatch, capsys):
    """When the CUDA EP raises at creation, ORT prints a banner to stdout and retries on the CPU."""
    real_new_session = session_module._new_session

    def noisy_new_session(model_path, providers, threads):
        print("*************** EP Error ***************")
        print("EP Error [ONNXRuntimeError] : 1 : FAIL : cudnn64_9 could not be loaded when using ['CUDAExecutionProvider']")
        print("Falling back to ['CPUExecutionProvider'] and retrying.")
        return real_new_session(model_path, ["CPUExecutionProvider"], threads)

    monkeypatch.setattr(session_module, "cuda_precheck", lambda: None)
    monkeypatch.setattr(session_module, "_new_session", noisy_new_session)
    session, reason = session_module._try_cuda_session(tiny_bundle.path / "model.fp32.onnx", 1)
    assert session is None
    assert reason == "CUDA EP failed: [ONNXRuntimeError] : 1 : FAIL : cudnn64_9 could not be loaded"
    assert capsys.readouterr().out == ""


def test_runtime_failure_is_one_line_inference_error(tiny_bundle):
    from karyo.runtime.session import InferenceError

    session, _ = create_session(tiny_bundle.path / "model.fp32.onnx", "cpu")
    with pytest.raises(InferenceError, match=r"^inference failed on CPU for a batch of 2: .*INVALID_ARGUMENT") as caught:
        run_probabilities(session, np.zeros((2, 8, 8, 1), np.float32))
    assert "\n" not in str(caught.value)


@pytest.mark.realdata
def test_real_crops_all_classify(shared_data, tmp_path):
    """Real scanner TIFFs (vendor tags, odd sizes) all decode and run; nothing is checked about accuracy."""
    from karyo.runtime.dataset import read_labeled_folder

    bundle = make_bundle(tmp_path / "b", size=32, precisions=("fp32",))
    samples = read_labeled_folder(shared_data / "pki-dev")[::175] + read_labeled_folder(shared_data / "pampaj7")[::60]
    predictions = Classifier(bundle.path, provider="cpu").predict_paths([s.path for s in samples])
    assert len(predictions) == len(samples) > 100
    assert [p.error for p in predictions if p.error] == []
    np.testing.assert_allclose(np.stack([p.probs for p in predictions]).sum(axis=1), 1.0, atol=1e-5)
