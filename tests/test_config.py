"""Config validation at start-up: typos, wrong types and unknown choices name the key and the options."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException

import lyria
from lyria.config import ConfigError, DisallowedTargetError, GenerateSchema, TrainSchema, build, register_class, resolve_class, validate
from lyria.tokenizers import LyriaTokenizer, TokenizerConfigError


def test_the_default_train_config_validates(compose_train):
    cfg = validate(compose_train(), TrainSchema)
    assert cfg.data.source._target_.endswith("Music21CorpusSource")
    assert cfg.model.mixer._target_.endswith("AttentionMixer")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+data.batch_szie=8", r"unknown config key 'data.batch_szie'; did you mean 'data.batch_size'\?"),
        ("+training.optimizer.learning_rate=1", r"training.optimizer.learning_rate.*Allowed keys under 'training.optimizer'.*'lr'"),
        ("+model.n_layer=2", r"did you mean 'model.n_layers'"),
        ("data.batch_size=many", r"invalid value for config key 'data.batch_size'"),
        ("+seeed=1", r"unknown config key 'seeed'; did you mean 'seed'"),
    ],
)
def test_bad_keys_and_values_fail_at_start_up(compose_train, override, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_train(override), TrainSchema)


def test_unknown_group_choice_lists_the_options(compose_train):
    with pytest.raises(MissingConfigException, match="attention_rope"):
        compose_train("model/mixer=attention_typo")


def test_bad_constructor_argument_names_the_node_and_accepted_parameters(compose_train):
    cfg = compose_train("+data.source.style=oops")
    with pytest.raises(ConfigError, match=r"cannot build 'data.source'.*accepts: \['styles'\]"):
        build(cfg.data.source, "data.source")


def test_tokenizer_config_keys_are_checked_against_miditok():
    with pytest.raises(TokenizerConfigError, match=r"unknown tokenizer.config key\(s\) \['num_velocity'\]"):
        LyriaTokenizer(config={"num_velocity": 8})
    with pytest.raises(TokenizerConfigError, match="special_tokens is fixed"):
        LyriaTokenizer(config={"special_tokens": ["PAD"]})


def test_generate_config_needs_a_checkpoint(compose_train):
    cfg = compose_train(config_name="generate")
    with pytest.raises(Exception, match="ckpt"):
        validate(cfg, GenerateSchema).ckpt  # noqa: B018 - reading a missing value raises
    with pytest.raises(ConfigError, match="unknown config key 'temprature'; did you mean 'temperature'"):
        validate(compose_train("+temprature=2", "ckpt=x", config_name="generate"), GenerateSchema)


def test_a_mixer_typo_names_the_node_and_the_accepted_parameters(compose_train):
    from lyria.models.lm import build_model

    cfg = compose_train("model/mixer=attention_sliding", "+model.mixer.windw=8")
    with pytest.raises(ConfigError, match=r"cannot build 'model.mixer'.*'windw'.*accepts: \['d_model', 'n_heads', 'dropout', 'window'\]"):
        build_model(cfg.model, LyriaTokenizer())


def _yaml_targets() -> list[tuple[str, str]]:
    """(file: key, target) of every `_target_` in every YAML under conf/."""
    from omegaconf import OmegaConf

    from lyria.cli import CONF_DIR
    from lyria.config import iter_targets

    found = []
    for path in sorted(Path(CONF_DIR).rglob("*.yaml")):
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        found += [(f"{path.relative_to(CONF_DIR)}: {key}", target) for key, target in iter_targets(node, "")]
    return found


@pytest.mark.parametrize(("where", "target"), _yaml_targets(), ids=[w for w, _ in _yaml_targets()])
def test_every_class_a_config_names_is_on_the_allow_list(where, target):
    assert isinstance(resolve_class(target, where), type)


@pytest.mark.parametrize(
    "node",
    [
        {"_target_": "os.system", "_args_": ["true"]},
        {"_target_": "lyria.models.conditioning.Conditioner", "d_model": {"_target_": "builtins.eval", "_args_": ["1"]}},
        {"_target_": "lyria.models.conditioning.Conditioner", "_args_": [[{"_target_": "subprocess.Popen"}]]},
        {"_target_": "lightning.pytorch.callbacks.Callback"},  # under lightning, but not on the list
        {"_target_": "lyria.config.instantiate"},  # a third-party function re-exported by a lyria module
        {"_target_": "lyria.data.prepare._Encoder"},
    ],
)
def test_build_refuses_targets_outside_the_allow_list_at_any_depth(node):
    with pytest.raises(DisallowedTargetError, match=r"refusing to load"):
        build(node, "model.conditioning", num_styles=2)


def test_a_registered_class_is_allowed_and_others_stay_refused(monkeypatch):
    import lyria.config

    monkeypatch.setattr(lyria.config, "_registered", set())
    with pytest.raises(DisallowedTargetError):
        resolve_class("collections.OrderedDict", "plugin._target_")
    register_class("collections.OrderedDict")
    assert build({"_target_": "collections.OrderedDict", "a": 1}, "plugin") == {"a": 1}
    with pytest.raises(DisallowedTargetError):
        resolve_class("collections.Counter", "plugin._target_")


def test_only_the_config_module_turns_names_into_code():
    """instantiate / get_class / import_module / eval / exec / pickle loads live in lyria/config.py alone."""
    pattern = re.compile(r"\b(instantiate|get_class|import_module|pickle\.loads?|__import__)\b|(?<![\w.])(eval|exec)\(")
    package = Path(lyria.__file__).parent
    offenders = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "config.py" or path.parent != package
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+render.synth.reverbb=0.1", r"unknown config key 'render.synth.reverbb'; did you mean 'render.synth.reverb'"),
        ("+render.format=[midi]", r"did you mean 'render.formats'"),
        ("render.sample_rate=fast", r"invalid value for config key 'render.sample_rate'"),
    ],
)
def test_render_settings_are_checked_at_start_up(compose_train, override, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_train("ckpt=x", override, config_name="generate"), GenerateSchema)


MODEL_CONFIGS = sorted(p.stem for p in (Path(lyria.__file__).resolve().parents[1] / "conf" / "model").glob("*.yaml"))


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_every_model_config_gives_its_mixers_the_attention_dropout_it_names(compose_train, name):
    from lyria.models.lm import build_model

    cfg = validate(compose_train(f"model={name}"), TrainSchema)
    tokenizer = build(cfg.tokenizer, "tokenizer")
    model = build_model(cfg.model, tokenizer)
    expected = cfg.model.dropout if cfg.model.attention_dropout is None else cfg.model.attention_dropout
    assert {block.mixer.dropout for block in model.blocks} == {expected}
    assert model.drop.p == cfg.model.dropout
