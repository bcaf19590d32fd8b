"""glibc's mmap threshold, which TensorFlow pins when Keras feeds it our batches: training must set it back.

Each check runs in a child process, since the thresholds are process-wide and stay as set. The
measure is the mechanism of the slowdown: which share of a training step's worth of 3 MiB buffers
(the size of its activations; numpy takes them from malloc as TensorFlow does) glibc maps afresh from
the kernel, and so has to fault in page by page on every step, instead of reusing its heap.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import textwrap

import pytest

from karyo.export.allocator import glibc_mallopt


def _has_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


pytestmark = [
    pytest.mark.skipif(glibc_mallopt() is None, reason="mallopt thresholds exist in glibc only (Linux)"),
    pytest.mark.skipif(glibc_mallopt() is not None and not _has_mallinfo2(), reason="the probe needs mallinfo2 (glibc 2.33 or later)"),
]

# 192 MiB in 3 MiB buffers held at once: more than glibc keeps free at the top of its heap (at most
# the 64 MiB trim threshold), so part of them must come from the kernel, as mappings or as heap.
MAPPED_PROBE = """
import ctypes
import numpy as np

class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _Mallinfo2

def mapped_share(n=64, size=3 << 20):
    before = _libc.mallinfo2().hblkhd  # bytes in chunks glibc mapped on their own
    buffers = [np.ones(size, np.uint8) for _ in range(n)]
    mapped = _libc.mallinfo2().hblkhd - before
    del buffers
    return mapped / (n * size)
"""


def _run_child(body: str) -> dict:
    script = MAPPED_PROBE + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_restoring_the_thresholds_stops_mapping_every_large_buffer_afresh():
    result = _run_child(
        """
        import ctypes, json
        from karyo.export.allocator import M_MMAP_THRESHOLD, restore_malloc_thresholds
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 128 * 1024)  # what TensorFlow's from_generator does
        pinned = [mapped_share(), mapped_share()]
        restored = restore_malloc_thresholds()
        print(json.dumps({"pinned": pinned, "restored": restored, "after": [mapped_share(), mapped_share()]}))
        """
    )
    assert result["restored"] is True
    assert min(result["pinned"]) >= 0.99, result  # every buffer, every time
    assert max(result["after"]) == 0.0, result


@pytest.mark.slow
def test_training_leaves_large_buffers_on_the_heap_after_keras_feeds_tensorflow_its_batches():
    """fit_model goes through Keras' PyDataset, i.e. TensorFlow's from_generator, which pins the
    threshold on Python 3.11+ (without the callback both shares read 1.0 here: TensorFlow 2.21,
    Python 3.11); what runs after training keeps the heap too."""
    result = _run_child(
        """
        import json
        import numpy as np
        from karyo.export.train import fit_model
        from karyo.runtime.labels import scheme
        from karyo.runtime.preprocess import PreprocessSpec
        from karyo.runtime.tensors import LabeledTensors

        rng = np.random.default_rng(0)
        labels = scheme("normal24")
        spec = PreprocessSpec(size=32, width=16)
        data = LabeledTensors(
            x=rng.integers(0, 255, (96, 32, 16, 1), dtype=np.uint8), y=np.arange(96) % len(labels), samples=[], skipped=[]
        )
        fit_model(data, None, "edge", labels, spec, epochs=2, batch_size=32, verbose=0)
        print(json.dumps({"after": [mapped_share(), mapped_share()]}))
        """
    )
    assert max(result["after"]) == 0.0, result
