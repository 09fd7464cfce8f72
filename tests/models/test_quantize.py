"""`quantize: int8` (lyria.generation.quantize): every mixer (conf/model/mixer/) with every conditioning scheme
(conf/model/conditioning/) decodes through the cache in int8 with logits close to the fp32 model's; the output
heads stay fp32 and tied to the embeddings; values and devices that cannot work are named."""

from __future__ import annotations

import pytest
import torch
from mixer_cases import MIXER_NAMES, bar_layout
from test_conditioning import CONDITIONING_NAMES, VOCAB, conditioned_lm
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from lyria.config import ConfigError, GenerateSchema, validate
from lyria.generation import quantize
from lyria.generation.quantize import Int8Linear, check_quantize, quantize_model, quantized_names

# Tolerance of the int8 logits against the fp32 ones: the largest difference over all positions and tokens, as a
# share of the fp32 logits' standard deviation. Each quantized linear rounds twice: its weights to int8 per output
# channel (at most half a step, 1/254 of the row's largest weight) and its input to 7 bits over the input's own
# range per call (torch's x86 kernels: at most 1/254 of the range); summed over a dot product these errors mostly cancel, so one layer moves
# its output by about 1%. A two-layer model has about ten such layers in series (mixer, feed-forward,
# conditioning projections), and the largest of 2 x 24 x 40 logits lands at 5% to 9% of the spread over the
# mixer x conditioning grid here; 20% leaves room for other CPUs' kernels. The faults this guards against move the
# logits by more than their whole spread (a cache that decodes the neighbouring position: 190% or more; a layer
# left unscaled or without its bias; an untied or missing head).
LOGIT_TOLERANCE = 0.20


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter moved off its initial value (zero-initialised conditioning paths included), as training
    would, so that each quantized layer contributes to the logits."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def cached_logits(model: nn.Module, tokens, bars, cond, prefill: int = 5) -> torch.Tensor | list[torch.Tensor]:
    """Logits of every position, the first `prefill` in one call and the rest one token at a time through the cache."""
    with torch.inference_mode():
        cache = model.new_cache()
        parts = [model(tokens[:, :prefill], bar_ids=bars[:, :prefill], cond=cond, cache=cache)[0]]
        for t in range(prefill, tokens.shape[1]):
            step, cache = model(tokens[:, t : t + 1], bar_ids=bars[:, t : t + 1], cond=cond, cache=cache)
            parts.append(step)
    if isinstance(parts[0], list):  # compound tokenizers: one logits tensor per field
        return [torch.cat(field, dim=1) for field in zip(*parts)]
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("mixer", MIXER_NAMES)
@pytest.mark.parametrize("conditioning", CONDITIONING_NAMES)
def test_int8_decodes_through_the_cache_close_to_fp32(conditioning, mixer):
    model = trained_like(conditioned_lm(mixer, conditioning, style_output=conditioning == "adaln"))
    tokens = torch.randint(6, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
    bars = bar_layout(2, 24)
    cond = {"style": torch.tensor([0, 2])} if model.conditional else None
    with torch.inference_mode():
        reference, _ = model(tokens, bar_ids=bars, cond=cond)
    quantized = quantize_model(model, "int8")

    names = quantized_names(model)
    modules = dict(quantized.named_modules())
    assert names and all(type(modules[name]) is Int8Linear for name in names)
    left = [name for name, m in quantized.named_modules() if type(m) is nn.Linear]
    assert all(name.startswith(("heads.", "conditioner.encoder.")) for name in left), left  # the heads, the memory encoder
    if conditioning in ("adaln", "cross_attention"):  # the conditioning modules' own linears are quantized too
        assert any(name.startswith("conditioner.") for name in names)

    got = cached_logits(quantized, tokens, bars, cond)
    assert got.shape == reference.shape and torch.isfinite(got).all()
    error = (got - reference).abs().max().item()
    assert error <= LOGIT_TOLERANCE * reference.std().item(), f"int8 logits off by {error:.4g} (fp32 std {reference.std().item():.4g})"
    assert error > 0  # the int8 path really ran
    # the original model is untouched: still fp32 linears, the same logits
    assert all(type(dict(model.named_modules())[name]) is nn.Linear for name in names)
    with torch.inference_mode():
        torch.testing.assert_close(model(tokens, bar_ids=bars, cond=cond)[0], reference, atol=0, rtol=0)


@pytest.mark.parametrize("tie", [True, False])
def test_output_heads_and_embeddings_stay_fp32_and_tied(tie):
    torch.manual_seed(0)
    from lyria.models.lm import LyriaLM
    from mixer_cases import mixer_config

    model = LyriaLM([VOCAB], mixer_config("attention_rope"), d_model=32, n_layers=2, n_heads=4, d_ff=64, tie_embeddings=tie).eval()
    quantized = quantize_model(model, "int8")
    head, embedding = quantized.heads[0], quantized.embeddings[0]
    assert type(head) is nn.Linear and head.weight.dtype == torch.float32
    assert (head.weight is embedding.weight) == tie
    torch.testing.assert_close(head.weight, model.heads[0].weight, atol=0, rtol=0)
    assert head.weight is not model.heads[0].weight  # a copy: the fp32 model stays usable beside it


def test_no_quantization_returns_the_model_itself():
    model = conditioned_lm("attention_rope", "none")
    assert quantize_model(model, None) is model


@pytest.mark.parametrize(
    "mode,device,message",
    [
        ("int4", "cpu", r"quantize='int4' is not a quantization mode: use null \(fp32, the default\) or one of \['int8'\]"),
        ("fp16", "cpu", r"quantize='fp16' is not a quantization mode"),
        ("int8", "cuda", r"quantize=int8 is torch's dynamic int8 quantization, which runs on the CPU only, but device=cuda"),
    ],
)
def test_values_that_cannot_work_are_named(mode, device, message):
    with pytest.raises(ConfigError, match=message):
        check_quantize(mode, device)


def test_a_model_on_another_device_is_refused():
    model = conditioned_lm("attention_rope", "none").to("meta")  # stands for a GPU: any device but the CPU
    with pytest.raises(ConfigError, match=r"quantize=int8 quantizes a model on the CPU, but this one is on \['meta'\]"):
        quantize_model(model, "int8")


def test_a_missing_engine_is_named(monkeypatch):
    monkeypatch.setattr(quantize, "supported_engines", lambda: ["qnnpack"])  # an ARM build of torch
    with pytest.raises(ConfigError, match=r"quantize=int8 needs torch's x86 or fbgemm quantized engine.*\['qnnpack'\]"):
        check_quantize("int8")


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["quantize=int4"], r"quantize='int4' is not allowed: expected one of \['int8'\]"),
        (["quantize=int8", "device=cuda"], r"quantize=int8 is not allowed with device=cuda: .* runs on the CPU only"),
    ],
)
def test_generate_config_rejects_the_option_with_its_name(compose_train, tmp_path, overrides, message):
    (tmp_path / "model.ckpt").write_bytes(b"")
    cfg = compose_train(f"ckpt={tmp_path / 'model.ckpt'}", *overrides, config_name="generate")
    with pytest.raises(ConfigError, match=message):
        validate(cfg, GenerateSchema)


def test_generate_config_accepts_int8_and_null(compose_train, tmp_path):
    (tmp_path / "model.ckpt").write_bytes(b"")
    for value in ("int8", "null"):
        cfg = validate(compose_train(f"ckpt={tmp_path / 'model.ckpt'}", f"quantize={value}", config_name="generate"), GenerateSchema)
        assert cfg.quantize == (None if value == "null" else value)


def test_lyria_generate_samples_from_the_int8_model(compose_train, tmp_path, monkeypatch):
    """build_sampler with quantize=int8 samples through the cache, past the context (re-reads), every row decodable."""
    from omegaconf import OmegaConf

    from lyria.generation import generate as generate_module
    from lyria.generation.sampler import Limits
    from lyria.models.lm import LyriaLM
    from lyria.tokenizers import LyriaTokenizer
    from mixer_cases import MIXER_DIR, mixer_config

    tokenizer_cfg = OmegaConf.to_container(OmegaConf.load(MIXER_DIR.parents[1] / "tokenizer" / "remi.yaml"), resolve=True)
    tokenizer_cfg.pop("_target_")
    tokenizer = LyriaTokenizer(**tokenizer_cfg)
    torch.manual_seed(0)
    model = LyriaLM(tokenizer.vocab_sizes, mixer_config("attention_rope"), d_model=32, n_layers=2, n_heads=4, d_ff=64, max_seq_len=48)
    model = trained_like(model)
    monkeypatch.setattr(generate_module, "load_model", lambda ckpt, map_location="cpu": (model, tokenizer, {}))
    (tmp_path / "model.ckpt").write_bytes(b"")
    cfg = validate(compose_train(f"ckpt={tmp_path / 'model.ckpt'}", "quantize=int8", config_name="generate"), GenerateSchema)
    sampler = generate_module.build_sampler(cfg)
    assert isinstance(sampler.model.blocks[0].ffn.up, DynamicQuantizedLinear) and sampler.model is not model
    results = sampler.generate(tokenizer.step_ids(tokenizer.bos_id)[None], [0, 1, 2], Limits(max_new_tokens=100))
    assert len(results) == 3
    for result in results:
        assert len(result.new_ids) > 0 and (len(result.new_ids) == 100 or result.new_ids[-1] == tokenizer.eos_id)


def test_a_study_passes_quantize_to_its_generation(compose_train, tmp_path):
    from lyria.experiments.study import study_configs

    checkpoint = tmp_path / "run" / "checkpoints" / "best.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.touch()
    (tmp_path / "run" / "samples").mkdir()  # the evaluation's config names it
    configs = study_configs(compose_train("study=default", "+study.generate.quantize=int8"), tmp_path / "run", checkpoint)
    assert configs.generate.quantize == "int8"
    with pytest.raises(ConfigError, match=r"study.generate: quantize='int4' is not allowed: expected one of \['int8'\]"):
        study_configs(compose_train("study=default", "+study.generate.quantize=int4"), tmp_path / "run", checkpoint)


def test_compound_models_keep_every_field_head_tied_and_decode_close_to_fp32():
    from lyria.models.lm import LyriaLM
    from mixer_cases import mixer_config

    vocab = [VOCAB, 12, 9]
    torch.manual_seed(0)
    model = trained_like(LyriaLM(vocab, mixer_config("attention_rope"), d_model=32, n_layers=2, n_heads=4, d_ff=64, dropout=0.0))
    quantized = quantize_model(model, "int8")
    assert all(type(h) is nn.Linear and h.weight is e.weight for h, e in zip(quantized.heads, quantized.embeddings))
    gen = torch.Generator().manual_seed(4)
    tokens = torch.stack([torch.randint(6, v, (2, 20), generator=gen) for v in vocab], dim=-1)
    bars = bar_layout(2, 20)
    with torch.inference_mode():
        reference, _ = model(tokens, bar_ids=bars)
    got = cached_logits(quantized, tokens, bars, None)
    assert len(got) == len(reference) == len(vocab)
    for field_got, field_reference in zip(got, reference):
        error = (field_got - field_reference).abs().max().item()
        assert 0 < error <= LOGIT_TOLERANCE * field_reference.std().item()


def test_torchs_deprecation_notices_of_the_api_are_silenced_and_nothing_else(caplog):
    import logging
    import warnings

    model = conditioned_lm("attention_rope", "adaln")
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO, logger="lyria.generation.quantize"):
        warnings.simplefilter("always")
        quantize_model(model, "int8")
        warnings.warn("a warning of someone else's", UserWarning)
    assert [str(w.message) for w in caught] == ["a warning of someone else's"]
    # what was converted is logged: per block qkv, out, up and down, and adaln's projection of each block
    assert len(quantized_names(model)) == 2 * 4 + 2 and "quantize=int8: 10 linear layers" in caplog.text


@pytest.mark.parametrize("shape", [(1, 1, 48), (3, 5, 48), (7, 48)])
def test_lean_int8_linear_is_torchs_module_bit_for_bit(shape):
    """Int8Linear calls the kernel itself: the same outputs as torch.ao's module (same packed weights)."""
    torch.manual_seed(0)
    float_layer = nn.Sequential(nn.Linear(48, 80))
    ours = quantize_model(float_layer, "int8")[0]
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    torchs = quantize_dynamic(float_layer, {"0": per_channel_dynamic_qconfig}, dtype=torch.qint8)[0]
    assert type(ours) is Int8Linear and type(torchs) is DynamicQuantizedLinear
    x = torch.randn(shape) * 3
    assert torch.equal(ours(x), torchs(x))
