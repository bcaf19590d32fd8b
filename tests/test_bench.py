"""`karyo bench` and the benchmark's pieces on tiny ONNX bundles (no TensorFlow, no timing asserts).

Nothing here checks speed: the machine is shared. The tests check that the code runs, the
record and JSON are well formed, the history is appended atomically and compared the right way
round (a 20% worse figure is flagged, a 5% one is not), and the MAC count is exact.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import hardware  # noqa: E402
import history  # noqa: E402
import plots  # noqa: E402
import suite  # noqa: E402
from tiny_models import make_bundle, write_labeled_folder  # noqa: E402

from karyo.runtime.bench import benchmark_bundle, format_table, latency_summary  # noqa: E402
from karyo.runtime.dataset import read_labeled_folder  # noqa: E402

RECORD_KEYS = {"precision", "provider", "batch_size", "p50_ms", "p90_ms", "p99_ms", "per_image_ms", "throughput_ips"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "tiny", size=16, precisions=("fp32", "fp16", "int8"))


def _invoke_bench(args: list[str]):
    from karyo.runtime.cli import app

    # typer runs a lone registered command as the root; once other commands exist it is a subcommand
    prefix = ["bench"] if len(app.registered_commands) > 1 else []
    return CliRunner().invoke(app, prefix + args)


def test_bench_json_schema(tiny):
    args = ["--batch-sizes", "1,3", "-p", "fp32", "-p", "int8", "--iterations", "3", "--json", "--threads", "1", "--provider", "cpu"]
    result = _invoke_bench([str(tiny.path), *args])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"machine", "versions", "records"} <= set(data)
    assert data["machine"]["cores"] >= 1 and data["machine"]["cpu"]
    assert data["versions"]["onnxruntime"] and data["versions"]["numpy"] == np.__version__
    records = data["records"]
    assert [(r["precision"], r["batch_size"]) for r in records] == [("fp32", 1), ("fp32", 3), ("int8", 1), ("int8", 3)]
    for record in records:
        assert RECORD_KEYS <= set(record)
        assert record["provider"] == "cpu"
        assert 0 < record["p50_ms"] <= record["p90_ms"] <= record["p99_ms"]
        assert record["per_image_ms"] == pytest.approx(record["p50_ms"] / record["batch_size"], rel=1e-2)
        assert record["throughput_ips"] == pytest.approx(1000 * record["batch_size"] / record["p50_ms"], rel=1e-2)
        assert record["iterations"] == 3 and record["threads"] == 1
        assert record["peak_rss_mb"] is None or record["peak_rss_mb"] > 10


def test_machine_key_tells_cpu_classes_apart(monkeypatch):
    """Two CPUs behind one model name ("AMD EPYC" in a VM), with and without VNNI, run different
    INT8 kernels: their history records must not be compared, so the key names the class."""
    from karyo.runtime import bench, int8_check

    here = bench.machine_info()
    assert here["simd"] in {name for _, name in bench._SIMD_LEVELS} | {"baseline", "unknown"}
    assert here["int8_sums"] in {"exact", "16-bit pairs"} and here["simd"] in here["key"]
    if here["arch"] in ("x86_64", "AMD64"):
        cpuinfo = Path("/proc/cpuinfo")
        flags = cpuinfo.read_text().split() if cpuinfo.is_file() else []
        if flags:  # numpy's detection agrees with the kernel's flags
            assert (here["simd"] == "AVX2") == ("avx2" in flags and "avx512f" not in flags)
            assert (here["simd"] == "AVX-512 VNNI") == ("avx512_vnni" in flags)
        if "avx512_vnni" in flags:  # onnxruntime's VNNI kernels sum in 32 bits (measured on a Xeon)
            assert here["int8_sums"] == "exact"
    flipped = not int8_check.cpu_overflows_uint8_int8()
    monkeypatch.setattr(int8_check, "cpu_overflows_uint8_int8", lambda: flipped)
    other = bench.machine_info()
    assert other["cpu"] == here["cpu"] and other["key"] != here["key"]


def test_bench_table_and_errors(tiny, tmp_path):
    result = _invoke_bench([str(tiny.path), "--batch-sizes", "2", "--iterations", "2"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("precision"))
    body = [line.split() for line in lines[header + 2 :] if line.strip()]
    assert [row[0] for row in body] == ["fp32", "fp16", "int8"] and all(row[2] == "2" for row in body)

    missing = _invoke_bench([str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "not a bundle folder" in missing.output  # a bad bundle is exit 2, as in every command
    wrong = _invoke_bench([str(tiny.path), "-p", "fp16", "--batch-sizes", "0"])
    assert wrong.exit_code != 0


def test_bench_with_real_crops_and_unknown_precision(tiny, tmp_path):
    write_labeled_folder(tmp_path / "crops", tiny.labels, per_class=1, classes=[0, 1, 2])
    result = benchmark_bundle(tiny.path, batch_sizes=[5], precisions=["fp32"], iterations=2, data_dir=tmp_path / "crops")
    assert result["settings"]["inputs"] == "data:crops" and result["records"][0]["batch_size"] == 5
    from karyo.runtime.bundle import BundleError

    only_fp32 = make_bundle(tmp_path / "b32", size=16, precisions=("fp32",))
    with pytest.raises(BundleError, match="no int8 model"):
        benchmark_bundle(only_fp32.path, batch_sizes=[1], precisions=["int8"], iterations=1)


def test_latency_summary_values():
    summary = latency_summary([0.010] * 98 + [0.020, 0.030], batch_size=10)
    assert summary["p50_ms"] == pytest.approx(10.0)
    assert summary["p99_ms"] > 19.0 and summary["per_image_ms"] == pytest.approx(1.0)
    assert summary["throughput_ips"] == pytest.approx(1000.0)
    table = format_table([{"precision": "int8", "provider": "cpu", **summary, "load_s": 0.1, "peak_rss_mb": None}])
    assert "int8" in table and "1000.0" in table


def _record(date: str, p50: float, accuracy: float, key: str = "cpu-A x2") -> dict:
    return {"date": date, "mode": "quick", "machine": {"key": key}, "git": {"sha": "abc"},
            "figures": {"latency.edge.int8.b46.p50_ms": p50, "drift.synthetic.edge.int8.accuracy": accuracy,
                        "latency.edge.fp32.b1.p50_ms": 2.0, "macs": 5}}


def test_history_append_and_flagging(tmp_path):
    path = tmp_path / "history.jsonl"
    history.append_record(_record("d1", 10.0, 0.90), path)
    history.append_record(_record("d0", 1.0, 0.10, key="other machine"), path)
    path.write_text(path.read_text() + "{corrupt\n")  # a damaged line must not lose the rest
    history.append_record({**_record("d2", 12.0, 0.85), "nan": float("nan")}, path)
    records = history.load_history(path)
    assert [r["date"] for r in records] == ["d1", "d0", "d2"] and records[-1]["nan"] is None
    assert not list(tmp_path.glob(".history.jsonl.*"))  # no temp file left behind

    previous = history.previous_on_machine(records[:-1], "cpu-A x2", "quick")
    assert previous["date"] == "d1"
    assert history.previous_on_machine(records, "cpu-A x2", "full") is None  # a quick run is no baseline for a full one
    current = _record("d3", 12.0, 0.855)  # latency 20% worse, accuracy 5% worse
    rows = {r["figure"]: r for r in history.compare_figures(previous["figures"], current["figures"])}
    assert rows["latency.edge.int8.b46.p50_ms"]["worse"] is True
    assert rows["latency.edge.int8.b46.p50_ms"]["change"] == pytest.approx(0.20)
    assert rows["drift.synthetic.edge.int8.accuracy"]["worse"] is False
    assert rows["latency.edge.fp32.b1.p50_ms"]["worse"] is False
    assert rows["macs"]["direction"] is None and rows["macs"]["worse"] is False

    slower_5 = {"latency.edge.int8.b46.p50_ms": 10.5, "drift.synthetic.edge.int8.accuracy": 0.72}  # accuracy -20%
    rows = {r["figure"]: r for r in history.compare_figures(previous["figures"], slower_5)}
    assert rows["latency.edge.int8.b46.p50_ms"]["worse"] is False
    assert rows["drift.synthetic.edge.int8.accuracy"]["worse"] is True
    busy = history.compare_figures({"hardware.ort_int8_gops": 100.0}, {"hardware.ort_int8_gops": 70.0})
    assert busy[0]["worse"] is True and "machine was busier" in history.format_comparison(busy, previous)
    faster = history.compare_figures(previous["figures"], {"latency.edge.int8.b46.p50_ms": 5.0})
    assert faster[0]["worse"] is False  # improvements are never flagged
    text = history.format_comparison(list(rows.values()), previous)
    assert text.count("WORSE") == 1 and "drift.synthetic.edge.int8.accuracy" in text
    assert "2 figures compared: 1 more than 10% worse, 0 more than 10% better" in text
    full = history.format_comparison(list(rows.values()), previous, show_all=True)
    assert "latency.edge.int8.b46.p50_ms" in full and full.count("WORSE") == 1
    assert "nothing to compare" in history.format_comparison([], None)


def test_mac_count_of_conv_and_matmul(tmp_path):
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "W"], ["conv"], pads=[1, 1, 1, 1], strides=[2, 2]),  # 8x8 -> 4x4
        # flatten the way tf2onnx writes it: the target shape is computed at run time, so shape
        # inference cannot know the matmul's input width
        helper.make_node("Shape", ["conv"], ["conv_shape"]),
        helper.make_node("Gather", ["conv_shape", "zero"], ["batch"], axis=0),
        helper.make_node("Concat", ["batch", "minus_one"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["conv", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "D"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "macs",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 8, 8, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 5])],
        initializer=[numpy_helper.from_array(rng.random((4, 1, 3, 3), dtype=np.float32), "W"),
                     numpy_helper.from_array(rng.random((64, 5), dtype=np.float32), "D"),
                     numpy_helper.from_array(np.array([0], np.int64), "zero"),
                     numpy_helper.from_array(np.array([-1], np.int64), "minus_one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp_path / "m.onnx"))
    import onnxruntime as ort  # the graph really runs and gives 5 outputs per image

    out = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"image": np.zeros((2, 8, 8, 1), np.float32)})[0]
    assert out.shape == (2, 5)
    macs = hardware.count_macs_onnx(tmp_path / "m.onnx")
    assert macs["per_op"]["Conv"] == 4 * 4 * 4 * 1 * 3 * 3
    assert macs["per_op"]["MatMul"] == 64 * 5
    assert macs["macs"] == 576 + 320 and macs["unknown"] == []
    share = hardware.achieved_share(macs["macs"], 10, 1.0, peak_gops=0.1)
    assert share["achieved_gflops"] == pytest.approx(2 * 896 * 10 / 1e-3 / 1e9, rel=1e-3)
    assert share["share_of_peak"] == pytest.approx(share["achieved_gflops"] / 0.1, rel=1e-2)


def test_gemm_ceilings_are_measured():
    peaks = hardware.gemm_peaks(1, size=128, repeats=2, max_seconds=0.5)
    for name in ("numpy_fp32_gflops", "ort_fp32_gflops", "ort_int8_gops"):
        assert peaks[name] is not None and peaks[name] > 0, peaks


def test_cell_benchmark_checks_a_turned_cell_as_karyotype_does(tiny, tmp_path):
    """The benchmark's cell, its crops turned half a circle: the check fires with the hint
    `karyo karyotype` gives for the same files (Classifier.predict_cell)."""
    from karyo.runtime.classifier import Classifier

    crops = write_labeled_folder(tmp_path / "crops", tiny.labels, per_class=2)[:46]
    turned = []
    for index, (path, _) in enumerate(crops):
        target = tmp_path / "turned" / f"{index:02d}.png"
        target.parent.mkdir(exist_ok=True)
        assert cv2.imwrite(str(target), cv2.rotate(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.ROTATE_180))
        turned.append(target)
    cell = suite.cell_latency(tiny.path, turned, "fp32", threads=1, iterations=2, max_seconds=1.0)
    classifier = Classifier(tiny.path, precision="fp32", provider="cpu", threads=1, warmup=False, workers=1)
    expected = classifier.predict_cell(turned)[1]
    assert expected is not None and expected.endswith("(or train with --vflip)")
    assert cell["orientation_hint"] == expected
    assert cell["stages_p50_ms"]["orientation_check"] > 0  # an unsure cell is read again, turned


def test_run_pieces_on_tiny_bundle(tiny, tmp_path):
    """The pieces of benchmarks/run.py (latency rows, cell, drift, figures, report + history) on a tiny model."""
    import run

    peaks = hardware.best_of({"numpy_fp32_gflops": 10.0, "ort_fp32_gflops": None, "ort_int8_gops": 20.0},
                             {"numpy_fp32_gflops": 8.0, "ort_fp32_gflops": 12.0, "ort_int8_gops": 25.0})
    assert (peaks["numpy_fp32_gflops"], peaks["ort_fp32_gflops"], peaks["ort_int8_gops"]) == (10.0, 12.0, 25.0)
    assert suite.ceilings(peaks) == {"fp32": 12.0, "int8": 25.0}
    latency = suite.onnx_latency(tiny.path, "tiny", [1, 4], threads=1, iterations=2, max_seconds=1.0)
    assert latency["macs_per_image"] == 16 * 16 * 24
    keras_rows = [{"arch": "tiny", "engine": "keras", "precision": f"keras-{m}", "provider": "tensorflow-cpu",
                   **latency_summary([0.002, 0.002], b)} for m in ("predict", "call") for b in (1, 4)]
    rows = latency["rows"] + keras_rows
    suite.add_ratios(rows)
    suite.add_shares(rows, {"tiny": latency["macs_per_image"]}, peaks)
    onnx_rows = [r for r in rows if r["engine"] == "onnxruntime"]
    assert len(onnx_rows) == 6 and all(r["share_of_peak"] > 0 for r in onnx_rows)
    assert all(r["ratio_to_keras_predict"] == pytest.approx(r["p50_ms"] / 2.0, rel=1e-3) for r in onnx_rows)
    int8 = next(r for r in onnx_rows if r["precision"] == "int8")
    assert int8["ceiling"] == "int8"
    assert int8["share_of_peak"] == pytest.approx(2 * 6144 * int8["batch_size"] / (int8["p50_ms"] / 1e3) / 1e9 / 25.0, rel=1e-2)
    keras_row = next(r for r in rows if r["engine"] == "keras" and r["batch_size"] == 4)
    assert keras_row["achieved_gflops"] == pytest.approx(2 * 6144 * 4 / 0.002 / 1e9, rel=1e-3)
    assert "tiny" in suite.format_latency_table(rows)

    crops = write_labeled_folder(tmp_path / "crops", tiny.labels, per_class=2)  # 48 PNG crops, 24 classes
    cell = suite.cell_latency(tiny.path, [p for p, _ in crops[:46]], "int8", threads=1, iterations=3, max_seconds=1.0)
    assert cell["crops"] == 46 and cell["precision"] == "int8" and cell["end_to_end"]["p50_ms"] > 0
    assert set(cell["stages_p50_ms"]) >= {"decode_preprocess", "inference"}
    # the product's own path reads the same cell to the same call, from files and from arrays in memory
    product = cell["product"]
    assert (product["karyotype"], product["unreadable"]) == (cell["karyotype"], 0) and cell["karyotype"].startswith("46,")
    assert product["files_p50_ms"] > 0 and product["arrays_p50_ms"] > 0
    either = suite.cell_latency(tiny.path, [p for p, _ in crops[:46]], "int8", threads=1, iterations=3, max_seconds=1.0,
                                orientation="any")
    assert cell["orientation"] == "p-arm-up" and either["orientation"] == "any"
    assert either["crops"] == 46 and either["karyotype"] == cell["karyotype"]  # upright templates: nothing read turned
    # read p arm up, the chain holds karyotype's check whether the cell stands so; read both ways, it has none
    assert "orientation_check" in cell["stages_p50_ms"] and "orientation_check" not in either["stages_p50_ms"]
    assert cell["orientation_hint"] is None and either["orientation_hint"] is None

    samples = read_labeled_folder(tmp_path / "crops")
    drift = suite.precision_drift(tiny.path, samples, threads=1)
    assert drift["n"] == 48 and set(drift["precisions"]) == {"fp32", "fp16", "int8"}
    assert drift["precisions"]["fp32"]["agreement_with_fp32"] == 1.0
    assert drift["precisions"]["fp32"]["accuracy"] > 0.9  # template crops are classified as their class
    assert len(suite.limit_samples(samples, 10)) <= 10

    record = {"date": "2026-01-01T00:00:00+00:00", "mode": "quick", "git": {"sha": "x"}, "threads": 1,
              "machine": {"key": "tiny-machine"}, "hardware": {**peaks, "ort_fp32_gflops": None},
              "latency": {"models": {}, "rows": rows}, "cell": cell, "cell_any": either,
              "drift": {"synthetic": {"tiny": drift}, "real": {"skipped": "no data"}}, "demo": {"wall_s": None, "skipped": "x"}}
    record["figures"] = suite.flatten_figures(record)
    assert record["figures"]["latency.tiny.int8.b4.p50_ms"] > 0
    assert record["figures"]["cell_any.end_to_end.p50_ms"] == either["end_to_end"]["p50_ms"] > 0
    assert record["figures"]["cell_any.inference.p50_ms"] == either["stages_p50_ms"]["inference"]
    assert record["figures"]["drift.synthetic.tiny.fp32.accuracy"] == drift["precisions"]["fp32"]["accuracy"]
    assert "cell.end_to_end.p50_ms" in record["figures"] and "demo.wall_s" not in record["figures"]

    args = argparse.Namespace(out=tmp_path / "out", history=tmp_path / "history.jsonl", no_history=False)
    args.out.mkdir()
    run.report(json.loads(json.dumps(record)), args)
    worse = json.loads(json.dumps(record))
    worse["figures"]["latency.tiny.int8.b4.p50_ms"] *= 1.2
    run.report(worse, args)
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert len(lines) == 2
    second = json.loads(lines[1])
    assert second["comparison"]["worse"] == ["latency.tiny.int8.b4.p50_ms"]
    series = plots.drift_history_series(history.load_history(args.history), "tiny-machine")
    assert set(series) == {"synth tiny fp32 acc", "synth tiny int8 acc", "synth tiny int8 agree"}
    assert [x for x, _ in series["synth tiny int8 agree"]] == [1.0, 2.0]
    for picture in ("latency.png", "drift_history.png"):
        image = cv2.imread(str(args.out / picture))
        assert image is not None and image.shape[0] > 100 and image.std() > 5


def test_bench_cuda_request_without_gpu_is_one_clear_line(tiny):
    from karyo.runtime.session import cuda_status

    if cuda_status() is None:
        pytest.skip("a usable CUDA GPU is present: the refusal path cannot be exercised here")
    result = _invoke_bench([str(tiny.path), "--provider", "cuda", "--batch-sizes", "1", "--iterations", "1"])
    assert result.exit_code == 2
    assert "CUDA requested but unavailable" in result.output and "Traceback" not in result.output


def test_seed_export_falls_back_to_an_older_cached_bundle(tiny, tmp_path, monkeypatch):
    """No memory for tf2onnx: the export is not attempted, and an older export is timed, labelled as such."""
    import shutil

    import run

    monkeypatch.setitem(run.EXPORT_MEMORY_GB, "seed-dcnn", 1e9)
    args = argparse.Namespace(out=tmp_path, quick=True, no_cache=False)
    assert run.untrained_bundle(args, "seed-dcnn", (300, 300), 1)[0] is None
    (tmp_path / "cache").mkdir(exist_ok=True)
    shutil.copytree(tiny.path, tmp_path / "cache" / "seed-dcnn-300x300-0123456789ab")
    (tmp_path / "cache" / ".export.killed").mkdir()  # what a child killed for memory leaves behind
    bundle, how = run.untrained_bundle(args, "seed-dcnn", (300, 300), 1)
    assert bundle == tmp_path / "cache" / "seed-dcnn-300x300-0123456789ab"
    assert how.startswith("stale cache seed-dcnn-300x300-0123456789ab") and "GB free memory" in how
    assert not (tmp_path / "cache" / ".export.killed").exists()
