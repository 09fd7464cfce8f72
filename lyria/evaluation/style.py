"""Style fidelity through the style classifier (an evaluation asset of the conditioning work): the `style` family.

Pieces that carry a requested style (index.json entries' `style`; in the real-vs-real baseline, the
pieces' own styles, which gives the classifier's accuracy on real music) are scored with
`lyria.evaluation.style_classifier.style_fidelity(pieces, styles, classifier)`, whose `values` and
`per_piece` become this family's. `classifier=auto` takes the prepared data's classifier
(`style_classifier.classifier_for_data`, kept under `assets_dir`, trained on first use), or a path names a
saved one. The family reports itself
unavailable, with the reason, when the pieces carry no style, when lyria has no classifier module, or
when the classifier does not know the requested styles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lyria.evaluation.assets import file_digest
from lyria.evaluation.base import EvalInputs, Family, FamilyResult, register_family

CLASSIFIER_ASSET = "style_classifier"
AUTO = "auto"


def classifier_module():
    """lyria.evaluation.style_classifier, or None in a version of lyria without it."""
    try:
        from lyria.evaluation import style_classifier
    except ImportError:
        return None
    return style_classifier


@register_family
class StyleFidelity(Family):
    name = "style"

    def __init__(self, classifier: str | None = AUTO) -> None:
        self.classifier = classifier

    def settings(self) -> dict:
        """With the classifier's format version: a new version scores the (cached) baseline afresh."""
        module = classifier_module()
        return super().settings() | {"classifier_version": getattr(module, "VERSION", None) if module else None}

    def compute(self, inputs: EvalInputs) -> FamilyResult:
        pieces = inputs.generated
        scored = [i for i, style in enumerate(pieces.styles) if style is not None]
        if not scored:
            return FamilyResult.not_available(f"the {pieces.label} pieces carry no style (index.json entries have no 'style')")
        module = classifier_module()
        if module is None:
            return FamilyResult.not_available("this version of lyria has no style classifier (lyria/evaluation/style_classifier.py)")
        if self.classifier in (None, AUTO):
            if inputs.data is None:
                return FamilyResult.not_available("classifier=auto needs prepared data to take the classifier from")
            assets_dir = getattr(inputs.assets, "root", None)
            try:
                _, path = module.classifier_for_data(inputs.data, assets_dir=assets_dir)
            except ValueError as err:  # e.g. training data of a single style
                return FamilyResult.not_available(f"no style classifier for this data: {err}")
        else:
            path = Path(self.classifier)
            if not path.is_file():
                return FamilyResult.not_available(f"no style classifier file at eval.families.style.classifier={self.classifier!r}")
        try:
            scores = module.style_fidelity([pieces.pieces[i] for i in scored], [pieces.styles[i] for i in scored], path)
        except ValueError as err:  # e.g. styles the classifier was not trained on
            return FamilyResult.not_available(f"the style classifier {path} cannot score these pieces: {err}")
        result = FamilyResult()
        for name, value in scores.get("values", {}).items():
            result.set(name, value)
        for name, values in scores.get("per_piece", {}).items():
            column = np.full(len(pieces), np.nan)
            column[scored] = np.asarray(values, dtype=np.float64)
            result.per_piece[name] = column
        result.assets[CLASSIFIER_ASSET] = {"version": int(getattr(module, "VERSION", 1)), "hash": file_digest(path)}
        return result
