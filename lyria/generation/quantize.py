"""Opt-in int8 inference on the CPU (`quantize: int8` of lyria-generate and of a study's generate section).

This is torch.ao's dynamic quantization (`torch.ao.quantization.quantize_dynamic`), not a lyria kernel. It
replaces the `nn.Linear` layers of the blocks (mixers, feed-forward layers) and of the conditioning modules
(adaptive layer norm projections, cross-attention) by `DynamicQuantizedLinear`:

- weights are stored as int8 with one scale per output channel (symmetric, per-channel), packed once for
  torch's x86 / fbgemm engine;
- activations are quantized at each call from their own range (hence "dynamic": no calibration data), as
  uint8 with the range reduced to 7 bits (torch's x86 kernels keep one bit of headroom against overflow in
  their 16-bit intermediate sums), multiplied in integers with int32 accumulation, and returned in fp32 with
  the fp32 bias added.

Everything else stays fp32: embeddings, positional tables, layer norms, convolutions, the style-conditioned
output layer, the cross-attention conditioner's memory encoder (torch's Transformer layers, run once per
generation), and the output heads. The heads hold the (tied) token embedding weights, are small next to the
blocks (d_model x vocabulary), and their error would land on the logits unfiltered, so the tie stays intact.

Decoding reads every weight once per token; int8 weights are a quarter of the fp32 bytes, which is what makes
the cached loop faster on a CPU whose caches do not hold the fp32 model. The logits move slightly (see the
README's generation section for the measured NLL and greedy agreement). CPU only.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from lyria.config import ConfigError

log = logging.getLogger(__name__)

QUANTIZE_MODES = ("int8",)
# torch's quantized engines whose dynamic int8 linear runs the fbgemm kernels (x86 CPUs)
ENGINES = ("x86", "fbgemm")
# Modules kept in fp32 whatever their type: the output heads (tied to the embeddings)
KEEP_FP32 = ("heads",)
# torch's own Transformer layers (the cross-attention conditioner's memory encoder) read their linears' weights
# in their fused path, and run once per generation: their linears stay fp32
FP32_CONTAINERS = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.MultiheadAttention)


_LINEAR_DYNAMIC = torch.ops.quantized.linear_dynamic.default


class Int8Linear(DynamicQuantizedLinear):
    """torch.ao's dynamic int8 linear layer with a lean forward: the same kernel and arguments (activations
    with the range reduced to 7 bits, as torch's module passes for x86 / fbgemm), called through the op's
    overload directly. The module's own forward re-checks its dtype and version and resolves the op with
    keyword arguments at every call, about 20 us a call on a 2-core AVX2 EPYC: half a millisecond of every
    decoding step of a 6-layer model at batch 1, more than the kernels of its attention."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _LINEAR_DYNAMIC(x, self._packed_params._packed_params, True)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def decode_kernel(self):
        """This forward with the packed weights bound, for lyria.models.decode.DecodeStep: no module lookups, and
        the op's C++ entry called directly. The overload's Python `__call__` first scans the arguments for the
        stand-in objects of export tracing (a few microseconds a call, 24 calls a token for a 6-layer model);
        DecodeStep runs eagerly only, with the real packed weights."""
        packed = self._packed_params._packed_params
        op = _LINEAR_DYNAMIC._op

        def kernel(x: torch.Tensor) -> torch.Tensor:
            y = op(x, packed, True)
            return y if y.dtype == x.dtype else y.to(x.dtype)

        return kernel


def check_quantize(mode: Any, device: str | torch.device = "cpu", option: str = "quantize") -> str | None:
    """`mode` (None or "int8") after checking that it can run here; a ConfigError naming `option` otherwise."""
    if mode is None:
        return None
    if mode not in QUANTIZE_MODES:
        raise ConfigError(f"{option}={mode!r} is not a quantization mode: use null (fp32, the default) or one of {list(QUANTIZE_MODES)}")
    if torch.device(device).type != "cpu":
        raise ConfigError(
            f"{option}={mode} is torch's dynamic int8 quantization, which runs on the CPU only, but device={device}: "
            f"set device=cpu, or {option}=null on a GPU"
        )
    supported = supported_engines()
    if not any(engine in supported for engine in ENGINES):
        raise ConfigError(
            f"{option}={mode} needs torch's x86 or fbgemm quantized engine, and this torch build has {supported} "
            f"(an x86-64 CPU build of torch has them); set {option}=null"
        )
    return mode


def supported_engines() -> list[str]:
    """The quantized engines this torch build has (qnnpack, onednn, x86, fbgemm on an x86-64 build)."""
    return list(torch.backends.quantized.supported_engines)


def _engine() -> str:
    """The quantized engine the packed weights are made for (and run with): x86 or fbgemm."""
    current = torch.backends.quantized.engine
    if current in ENGINES:
        return current
    engine = next(e for e in ENGINES if e in supported_engines())
    log.info("quantize: switching torch's quantized engine from %s to %s", current, engine)
    torch.backends.quantized.engine = engine
    return engine


def quantized_names(model: nn.Module) -> list[str]:
    """The names of the linear layers that `quantize_model` converts: every nn.Linear outside KEEP_FP32 and
    outside torch's Transformer layers (FP32_CONTAINERS)."""
    kept = list(KEEP_FP32) + [name for name, module in model.named_modules() if isinstance(module, FP32_CONTAINERS)]
    return [
        name
        for name, module in model.named_modules()
        if type(module) is nn.Linear and not any(name == keep or name.startswith(keep + ".") for keep in kept)
    ]


def quantize_model(model: nn.Module, mode: Any, device: str | torch.device = "cpu", option: str = "quantize") -> nn.Module:
    """A copy of `model` (in eval mode) with its linear layers quantized as `mode` says; the model itself when
    `mode` is None. The original is left unchanged."""
    if check_quantize(mode, device, option) is None:
        return model
    where = {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()}
    if where - {"cpu"}:
        raise ConfigError(f"{option}={mode} quantizes a model on the CPU, but this one is on {sorted(where)}: load it with device=cpu")
    names = quantized_names(model)
    if not names:
        log.warning("%s=%s: the model has no linear layer to quantize; it stays fp32", option, mode)
        return model
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    engine = _engine()
    modules = dict(model.named_modules())
    weights = sum(modules[name].weight.numel() for name in names)
    total = sum(p.numel() for p in model.parameters())
    with warnings.catch_warnings():
        # torch marks this API (and the quantized tensors it makes) deprecated; it is still the one that runs
        # int8 linears on x86 CPUs. Only those two deprecation notices are silenced.
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel", category=UserWarning)
        quantized = quantize_dynamic(
            model.eval(), {name: per_channel_dynamic_qconfig for name in names}, dtype=torch.qint8, mapping={nn.Linear: Int8Linear}, inplace=False
        )
    log.info(
        "%s=%s: %d linear layers (%.2fM of the model's %.2fM fp32 parameters) now hold per-channel int8 weights "
        "(torch.ao dynamic quantization, %s engine); embeddings, output heads, norms and the rest stay fp32",
        option,
        mode,
        len(names),
        weights / 1e6,
        total / 1e6,
        engine,
    )
    return quantized
