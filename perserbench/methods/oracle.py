"""``oracle``: the ceiling on the synthetic corpus — the true perception model of the listener.

A reference, not a competitor (:class:`~perserbench.method.ReferenceMethod`): it reads the
generative ground truth of the synthetic corpus through the runner's privileged reference
path, so it shows how much of a listener's labels can be predicted at all. Reports and the
board show it as the ceiling and never rank it.
"""

from __future__ import annotations

import numpy as np

from perserbench.errors import PerserbenchError
from perserbench.method import ReferenceContext, ReferenceMethod
from perserbench.registry import register_method


@register_method("oracle")
class Oracle(ReferenceMethod):
    """Predicts with the synthetic corpus's true listener model (the ceiling; a reference)."""

    def predict_reference(self, context: ReferenceContext) -> tuple[np.ndarray, np.ndarray | None]:
        truth = context.task.corpus.truth
        if truth is None:
            raise PerserbenchError(
                f"method 'oracle' needs a synthetic corpus with a known generative model; task "
                f"{context.task.spec.name!r} has none"
            )
        utterances = context.task.corpus.annotations.utterance[context.episode.query]
        return np.asarray(truth.listener_proba(context.episode.listener, utterances), dtype=np.float32), None
