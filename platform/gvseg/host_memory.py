"""Keep freed host memory in the process while training, so the train step stops paying page faults.

glibc's ``malloc`` serves every block above its mmap threshold (128 KiB, growing dynamically to at most the size
of the largest block freed) with a fresh ``mmap`` and gives it back with ``munmap`` on ``free``; it also trims the
heap top past 128 KiB. A CPU train step allocates and frees hundreds of 1-50 MB activations (the deformable
attention's [N*M, Dh, Lq, P] samples are 16 MB each at 256x256), so each of them is faulted in page by page and
zeroed by the kernel every step. The VPS recipe's step with TCL at 256x256 takes a median 112k minor faults
and 0.78 s of system time (2-core AMD EPYC, ``benchmarks/results/host_memory_cpu.json``).

:func:`keep_freed_memory` raises the mmap threshold to glibc's maximum (32 MiB on 64-bit) and the trim
threshold to 1 GiB, so freed blocks stay in the heap and the next step reuses them (what jemalloc / tcmalloc do,
without preloading a library). The peak resident set does not grow: the step frees and re-takes the same sizes.
Measured, 3 interleaved process pairs: 12.12 -> 11.22 CPU s a step (1.08x), wall 6.29 -> 5.67 s, 41k faults,
0.55 s system, peak RSS 4.5 GB either way. The HF Mask2Former peer in the same processes: 5.70 -> 5.68 CPU s
(it faults 24k pages a step by default; ours, 112k).

torch asks for 64-byte aligned blocks (``posix_memalign``), which glibc cannot always fit into the freed block
of the same size, so for the first few steps a block is taken from the heap top instead; the freed ones then
coalesce and the heap stops growing: resident memory settles by step 5 at 4506 MB against 4467-4523 MB with
the defaults (16 steps of the same recipe). Raw ``malloc`` / ``free`` of the same sizes reuse exactly
(``tests/test_host_memory.py``: 0 page faults against 205k over 4 rounds of 10 x 20 MB).

Contract: ``keep_freed_memory() -> bool``; True when glibc took all three settings, False elsewhere (musl,
macOS, Windows): there it changes nothing and raises nothing. Process-wide and not undone; call it once in the
process that trains (``engine.fit`` does, under ``train.keep_freed_memory``).
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameter numbers (glibc malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for 64-bit (DEFAULT_MMAP_THRESHOLD_MAX); larger values are refused
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of freed heap top instead of trimming past 128 KiB
TOP_PAD = 64 << 20  # grow the heap in 64 MiB steps (fewer brk calls)


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks (see the module docstring); False where there is no glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # no libc by that name, or a libc without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD)))
