"""`trainer.precision: auto`: bf16 mixed precision where the hardware computes bf16 natively, fp32 elsewhere.

On a CPU without native bf16 (e.g. AVX2-only x86) PyTorch emulates bf16 matmuls, which made a training
step about 12x slower than fp32; on CPUs with AVX-512 BF16 / AMX and on bf16-capable GPUs it is faster.
An explicit precision (`32`, `bf16-mixed`, `16-mixed`, ...) is passed to Lightning unchanged.
"""

from __future__ import annotations

import torch

AUTO = "auto"


def cpu_bf16_native() -> bool:
    """Whether oneDNN computes bf16 natively on this CPU (AVX-512 BF16 or AMX), not by emulation."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def gpu_bf16_native() -> bool:
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))


def resolve_precision(requested, accelerator) -> tuple[str, str]:
    """(precision for Lightning, why): `auto` follows the hardware; anything else is returned as given."""
    if str(requested) != AUTO:
        return str(requested), "set explicitly (trainer.precision)"
    accelerator = str(accelerator or AUTO)
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == AUTO and torch.cuda.is_available())
    if on_gpu:
        if gpu_bf16_native():
            return "bf16-mixed", "trainer.precision=auto: the GPU computes bf16 natively"
        return "32", "trainer.precision=auto: the GPU has no native bf16 (set trainer.precision=16-mixed for fp16)"
    if cpu_bf16_native():
        return "bf16-mixed", "trainer.precision=auto: this CPU computes bf16 natively (oneDNN reports AVX-512 BF16 / AMX)"
    return "32", (
        "trainer.precision=auto: this CPU has no native bf16 (oneDNN would emulate it, many times slower than fp32)"
    )


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else what the platform reports), for run logs and benchmark
    results: every figure names the machine it was measured on."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
