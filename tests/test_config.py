"""Config validation at start-up: typos, wrong types and unknown choices name the key and the options."""

from __future__ import annotations

import pytest
from hydra.errors import MissingConfigException

from lyria.config import ConfigError, GenerateSchema, TrainSchema, build, validate
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
