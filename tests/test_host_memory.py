"""gvseg.host_memory: glibc keeps freed blocks, so a step that frees and re-takes big buffers stops faulting."""

import ctypes
import platform
import subprocess
import sys
import textwrap

import pytest

from gvseg import host_memory

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

# 10 x 20 MB blocks alive at once, then all freed, 5 rounds. glibc's default mmaps the first round's blocks; from
# then on it serves them from the heap but trims the freed top (> 2x the raised mmap threshold), so every round
# faults its 200 MB in again. Kept, the first round's pages serve the rest. Raw malloc, so the count is exact;
# the settings are process-wide, so each arm gets its own interpreter.
_ROUNDS = textwrap.dedent("""
    import ctypes, resource, sys
    from gvseg import host_memory
    took = host_memory.keep_freed_memory() if sys.argv[1] == "keep" else None
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    def step():
        blocks = [libc.malloc(20 << 20) for _ in range(10)]
        for b in blocks:
            libc.memset(b, 1, 20 << 20)
        for b in blocks:
            libc.free(b)
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        step()
    print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(arm: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _ROUNDS, arm], capture_output=True, text=True, check=True)
    took, faults = out.stdout.split()
    return took, int(faults)


@glibc_only
def test_kept_memory_is_reused_instead_of_faulted_in_again():
    (_, default), (took, keep) = _faults("default"), _faults("keep")
    assert took == "True"
    assert default > 200_000  # 4 rounds x 200 MB / 4 KiB pages: the default re-faults all of it
    assert keep < 1_000


def test_without_mallopt_it_changes_nothing_and_says_so(monkeypatch):
    class NoMallopt:  # a C library without the symbol, as on macOS
        def __init__(self, name):
            pass

        def __getattr__(self, name):
            raise AttributeError(name)

    monkeypatch.setattr(ctypes, "CDLL", NoMallopt)
    assert host_memory.keep_freed_memory() is False

