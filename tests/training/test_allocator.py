"""training.cpu_allocator=keep: a training step's large blocks come from the process's heap, which keeps freed
memory, instead of a fresh mmap per block that munmap hands back on free (checked in fresh processes, glibc only;
the speed it buys is measured by benchmarks/train_throughput.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lyria.training.allocator import _glibc, tune_cpu_allocator

PROBE = """
import sys, torch
from lyria.training.allocator import tune_cpu_allocator
applied = tune_cpu_allocator(sys.argv[1])
x = torch.ones(16 * 2**20)  # 64 MB, as a step's feed-forward activations
address = x.data_ptr()
heap = []
for line in open("/proc/self/maps"):
    span, *rest = line.split()
    if rest and rest[-1] == "[heap]":
        heap.append(tuple(int(a, 16) for a in span.split("-")))
print(applied, any(lo <= address < hi for lo, hi in heap))
"""


def _probe(mode: str) -> tuple[bool, bool]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, timeout=120).stdout.split()
    return out[0] == "True", out[1] == "True"


@pytest.mark.skipif(_glibc() is None, reason="glibc's malloc only")
def test_keep_serves_large_blocks_from_the_heap_instead_of_one_mmap_each():
    assert _probe("keep") == (True, True)
    assert _probe("default") == (False, False)  # glibc maps (and on free unmaps) every block this large


def test_an_unknown_mode_is_an_error_naming_the_setting():
    with pytest.raises(ValueError, match="training.cpu_allocator='fast'"):
        tune_cpu_allocator("fast")
