"""Every test that takes `mixer_variant` runs once per YAML in conf/model/mixer/ (and extra config values)."""

from __future__ import annotations

import pytest
import torch
from mixer_cases import MIXER_VARIANTS, mixer_config, variant_id


def pytest_generate_tests(metafunc):
    if "mixer_variant" in metafunc.fixturenames:
        metafunc.parametrize("mixer_variant", MIXER_VARIANTS, ids=[variant_id(v) for v in MIXER_VARIANTS])


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and spinning threads stall when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def mixer_cfg(mixer_variant) -> dict:
    name, overrides = mixer_variant
    return mixer_config(name, overrides)
