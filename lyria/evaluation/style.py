"""Style fidelity through the style classifier (an evaluation asset the conditioning work provides): `style`.

The family scores pieces that carry a requested style (index.json entries' `style`; for the real-vs-real
baseline, the pieces' own styles, which gives the classifier's accuracy on real music). It reports itself
unavailable, with the reason, when the samples carry no style, when no classifier file is configured, or
while lyria has no classifier module. The classifier module contract:
`lyria.evaluation.style_classifier.style_fidelity(pieces, styles, classifier_path) -> dict` with set
values under "values" ({metric: number}) and optionally per-piece arrays under "per_piece".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lyria.evaluation.base import EvalInputs, Family, FamilyResult, register_family

CLASSIFIER_ASSET = "style_classifier"


def _classifier_function():
    try:
        from lyria.evaluation.style_classifier import style_fidelity
    except ImportError:
        return None
    return style_fidelity


@register_family
class StyleFidelity(Family):
    name = "style"

    def __init__(self, classifier: str | None = None) -> None:
        self.classifier = classifier

    def compute(self, inputs: EvalInputs) -> FamilyResult:
        scored = [i for i, style in enumerate(inputs.generated.styles) if style is not None]
        if not scored:
            return FamilyResult.not_available(
                f"the {inputs.generated.label} pieces carry no style (index.json entries have no 'style')"
            )
        style_fidelity = _classifier_function()
        if style_fidelity is None:
            return FamilyResult.not_available(
                "this version of lyria has no style classifier (lyria/evaluation/style_classifier.py)"
            )
        if self.classifier is None or not Path(self.classifier).is_file():
            return FamilyResult.not_available(
                f"no style classifier file (eval.families.style.classifier={self.classifier!r}); "
                "train one with the conditioning tools"
            )
        from lyria.evaluation.assets import file_digest

        scores = style_fidelity(
            [inputs.generated.pieces[i] for i in scored], [inputs.generated.styles[i] for i in scored], self.classifier
        )
        result = FamilyResult()
        for name, value in scores.get("values", {}).items():
            result.set(name, value)
        for name, values in scores.get("per_piece", {}).items():
            column = np.full(len(inputs.generated), np.nan)
            column[scored] = np.asarray(values, dtype=np.float64)
            result.per_piece[name] = column
        result.assets[CLASSIFIER_ASSET] = {"version": 1, "hash": file_digest(self.classifier)}
        return result
