"""Every test that takes `mixer_variant` runs once per YAML in conf/model/mixer/ (and extra config values)."""

from __future__ import annotations

import pytest
from mixer_cases import MIXER_VARIANTS, mixer_config, variant_id


def pytest_generate_tests(metafunc):
    if "mixer_variant" in metafunc.fixturenames:
        metafunc.parametrize("mixer_variant", MIXER_VARIANTS, ids=[variant_id(v) for v in MIXER_VARIANTS])


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test here runs single-threaded (see the shared `one_thread` fixture)."""


@pytest.fixture
def mixer_cfg(mixer_variant) -> dict:
    name, overrides = mixer_variant
    return mixer_config(name, overrides)
