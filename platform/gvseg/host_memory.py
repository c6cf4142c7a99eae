"""Keep freed host memory in the process while training, so the train step stops paying page faults.

glibc's ``malloc`` serves every block above its mmap threshold (128 KiB, growing dynamically to at most the size
of the largest block freed) with a fresh ``mmap`` and gives it back with ``munmap`` on ``free``; it also trims the
heap top past 128 KiB. A CPU train step allocates and frees hundreds of 1-50 MB activations (the deformable
attention's [N*M, Dh, Lq, P] samples are 16 MB each at 256x256), so each of them is faulted in page by page and
zeroed by the kernel every step: the VPS recipe's step with TCL at 256x256 took up to a median 112k minor
faults and 0.78 s of system time (2-core AMD EPYC, ``benchmarks/results/host_memory_cpu_run1.json``).

:func:`keep_freed_memory` raises the mmap threshold to glibc's maximum (32 MiB on 64-bit) and the trim
threshold to 1 GiB, so freed blocks stay in the heap and the next step reuses them (what jemalloc / tcmalloc do,
without preloading a library).
Measured three times, interleaved, idle 2-core AMD EPYC:
  run 1 (``host_memory_cpu_run1.json``, 3 process pairs x 3 steps): 12.12 -> 11.22 CPU s a step (1.08x), the
    default faulting 112k pages (0.78 s system) a step, kept 41k;
  run 2 (``host_memory_cpu.json`` = ``_run2``, 3 pairs x 6 steps, 40 min later): 9.56 -> 9.50 (1.006x): the
    default faulted only 18k pages (0.11 s system) that time, kept 8.6k;
  ``make demo``, 2 x 2 alternating runs (``demo_time.json`` ``keep_freed_memory_ab``): 152.5 s without, 155.8 s
    with (loop 115.5 / 118 s): no gain, within noise.
So it pays when the default faults heavily (what the box's state decides) and is neutral otherwise. Peak RSS
+0-3% (run 2 medians 4574 -> 4631 MB; the resident MB after each step stop growing by step 3-6, in the JSON).
HF Mask2Former in the same processes: 5.70 -> 5.68 and 4.92 -> 4.94 CPU s.

torch asks for 64-byte aligned blocks (``posix_memalign``), which glibc cannot always fit into the freed block
of the same size, so for the first few steps a block is taken from the heap top instead; the freed ones then
coalesce and the heap stops growing (``rss_mb_steps`` in ``host_memory_cpu.json``). Raw ``malloc`` /
``free`` of the same sizes reuse exactly (``tests/test_host_memory.py``: 0 page faults against 205k over 4 rounds of 10 x 20 MB).

Contract: ``keep_freed_memory() -> bool``; True when glibc took all three settings, False elsewhere (musl,
macOS, Windows): there it changes nothing and raises nothing. Process-wide and not undone; call it once in the
process that trains (``engine.fit`` does, under ``train.keep_freed_memory``).
"""

from __future__ import annotations

import ctypes

# mallopt parameter numbers (glibc malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for 64-bit (DEFAULT_MMAP_THRESHOLD_MAX); larger values are refused
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of freed heap top instead of trimming past 128 KiB
TOP_PAD = 64 << 20  # grow the heap in 64 MiB steps (fewer brk calls)


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks (see the module docstring); False where there is no glibc."""
    try:  # the C library this process already runs on (whose malloc torch uses); no ldconfig lookup
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no dlopen(NULL) (Windows), or a libc without mallopt (macOS)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD)))
