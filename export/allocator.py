"""Keep training at full speed on Linux after TensorFlow pins glibc's mmap threshold.

Keras hands a `PyDataset` (our augmented batches) to TensorFlow as `tf.data.Dataset.from_generator`.
Under Python 3.11 (seen with TensorFlow 2.21), building that op makes TensorFlow call
`mallopt(M_MMAP_THRESHOLD, 128 KiB)` (`ApplyPython311MemoryPatch`, its remedy for from_generator's
memory growth there, tensorflow/tensorflow#65675), which also switches off glibc's dynamic
threshold for the rest of the process. From then on every buffer over 128 KiB, which is every
activation and gradient of a training step, is mapped fresh from the kernel and unmapped when
freed, so each step starts by zeroing its pages again. Measured on 2 cores (AMD EPYC, TensorFlow
2.21, Python 3.11, `edge` at 96x32, batches of 64; `benchmarks/training_speed.py`): about 146k
page faults per step and 42% of the process's CPU time in the kernel, against 45 to 16k and 5 to
10% with the thresholds restored; a step up to twice as slow (on that virtual machine the restored
step time varied from 0.5 to 1 s, so the median gain was smaller). That was on TensorFlow's Eigen
kernels, its own choice on a CPU without AVX-512 VNNI. On its oneDNN kernels, which training now
asks for on x86 (`models.prefer_onednn_kernels`), the pin hardly shows (800 to 960 against 34 to
50 faults per step, kernel 4.4 to 4.7% of the CPU time against 3.6 to 4.5%): the remedy stays for
Eigen, chosen (TF_ENABLE_ONEDNN_OPTS=0) or the only kernels a CPU has.

The remedy puts the two thresholds where glibc's own dynamic rule would have settled for tensors
this size (the mmap threshold at its 32 MiB ceiling, trimming at twice that), before every training
step, since the op may be rebuilt each epoch. It costs about 200 MB of memory kept for reuse, and
the resident size stays flat over a whole training (benchmarks/ACCURACY.md, Quantization, on
training time); on a C library other than glibc nothing is done.
"""

from __future__ import annotations

import ctypes
import platform
import sys
from functools import lru_cache
from typing import Any, Callable

# mallopt parameter numbers (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc refuses a fixed mmap threshold above HEAP_MAX_SIZE / 2: 32 MiB on 64-bit systems, the ceiling
# its dynamic rule stops at too. That rule keeps the trim threshold at twice the mmap threshold.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD


@lru_cache(maxsize=1)
def glibc_mallopt() -> Callable[[int, int], int] | None:
    """glibc's `mallopt`, or None where the C library is another (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def restore_malloc_thresholds() -> bool:
    """Set glibc's mmap and trim thresholds back to its dynamic rule's ceiling; False where that cannot be done."""
    mallopt = glibc_mallopt()
    if mallopt is None:
        return False
    # mallopt returns 1 on success; evaluate both calls, whatever the first returns
    results = [mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD), mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)]
    return all(r == 1 for r in results)


def malloc_thresholds_callback() -> Any:
    """A Keras callback that restores the thresholds before every training step and at the end of training.

    Defined lazily so importing this module does not import Keras.
    """
    import keras

    class MallocThresholds(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            restore_malloc_thresholds()

        def on_train_end(self, logs=None):
            restore_malloc_thresholds()

    return MallocThresholds()
