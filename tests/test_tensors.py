"""The shared labeled-tensor loader and progress counter."""

from __future__ import annotations

import numpy as np
from tiny_models import write_labeled_folder

from karyo.runtime.dataset import Sample, read_labeled_folder
from karyo.runtime.labels import scheme
from karyo.runtime.preprocess import PreprocessSpec, preprocess_path
from karyo.runtime.progress import Progress
from karyo.runtime.tensors import load_labeled_tensors


def test_loader_skips_bad_crops_and_foreign_labels(tmp_path):
    labels = scheme("normal24")
    written = write_labeled_folder(tmp_path / "d", labels, per_class=1, classes=[0, 1, 2])
    samples = read_labeled_folder(tmp_path / "d")
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    samples += [Sample(broken, "1", "c", "1"), Sample(written[0][0], "del(5)(p14)", "c", "1")]
    spec = PreprocessSpec(size=24)
    loaded = load_labeled_tensors(samples, spec, labels, progress=False, dtype=np.float16)
    assert len(loaded) == 3 and loaded.x.dtype == np.float16 and loaded.x.shape == (3, 24, 24, 1)
    assert [labels.labels[i] for i in loaded.y] == [s.label for s in loaded.samples] == ["1", "2", "3"]
    np.testing.assert_allclose(loaded.x[0], preprocess_path(loaded.samples[0].path, spec), atol=1e-3)
    assert len(loaded.skipped) == 2
    assert any("broken.png" in m for m in loaded.skipped) and any("not in scheme" in m for m in loaded.skipped)
    part = loaded.subset([loaded.samples[2], loaded.samples[0]])
    assert [labels.labels[i] for i in part.y] == ["3", "1"]


def test_progress_in_a_log_prints_about_every_tenth(capsys):
    meter = Progress(100, "work")
    for done in range(1, 101):
        meter.update(done)
    meter.close()
    meter.close()
    lines = capsys.readouterr().err.splitlines()
    assert "\r" not in "".join(lines)  # a log file gets whole lines
    assert 10 <= len(lines) <= 12 and lines[0] == "work: 1/100" and lines[-1].startswith("work: 100 done in")
