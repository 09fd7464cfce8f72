"""Feature values agree with MusPy's, and self-BLEU with NLTK's, on committed fixtures
(values computed by tests/evaluation/data/make_reference_values.py in a throw-away environment)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from evaluation_support import DATA
from symusic import Score

from lyria.data.notes import notes_from_score
from lyria.evaluation.base import PIECE_METRICS
from lyria.evaluation.diversity import self_bleu
from lyria.evaluation.features import FeatureSettings
from lyria.evaluation.tokens import TokenTable

REFERENCE = json.loads((DATA / "reference_values.json").read_text())
CASES = [(name, metric) for name, values in REFERENCE["muspy"].items() for metric in values if metric != "resolution"]


def test_every_fixture_is_compared_on_every_muspy_metric():
    assert {p.name for p in DATA.glob("*.mid")} == set(REFERENCE["muspy"])
    assert len(CASES) == 11 * len(REFERENCE["muspy"])


@pytest.mark.parametrize("name,metric", CASES)
def test_feature_equals_muspy(name, metric):
    expected = REFERENCE["muspy"][name][metric]
    piece = notes_from_score(Score(str(DATA / name)))
    value = PIECE_METRICS[metric].fn(piece, FeatureSettings(resolution=REFERENCE["muspy"][name]["resolution"]))
    if expected is None:
        assert math.isnan(value)
    else:
        assert value == pytest.approx(expected, abs=1e-12)


def test_self_bleu_equals_nltk_sentence_bleu():
    tokens = TokenTable.from_sequences([np.array(s) for s in REFERENCE["bleu_sequences"]])
    np.testing.assert_allclose(self_bleu(tokens), REFERENCE["nltk_self_bleu"], atol=1e-12)
