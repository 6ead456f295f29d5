"""``oracle``: the ceiling on the synthetic corpus — the true listener model, decided optimally.

A reference, not a competitor (:class:`~perserbench.method.ReferenceMethod`): it reads the
generative ground truth of the synthetic corpus through the runner's privileged reference
path, so it shows how much of a listener's labels can be predicted at all. Reports and the
board show it as the ceiling and never rank it.

It predicts with the exact probabilities the listener's labels are drawn from
(``truth.listener_proba``; labels of different utterances are independent given them) and
decides each class with the thresholds that maximise the expected per-episode macro-F1
(:func:`perserbench.expected_f1.optimal_thresholds`). Scored at a fixed 0.5 it would be below
what is achievable (0.3 scores higher on ``synthetic``), and an honest method could beat the
"ceiling"; decided optimally, no method that sees only features can, in expectation. (One
approximation remains: whether to leave a class unpredicted is decided as if the classes of
an item were independent, while a listener's primary label makes them slightly dependent;
the per-class top-k choice is exact.)
"""

from __future__ import annotations

import numpy as np

from perserbench.data.synthetic.perception import ListenerModel
from perserbench.errors import PerserbenchError
from perserbench.expected_f1 import optimal_thresholds
from perserbench.method import ReferenceContext, ReferenceMethod
from perserbench.registry import register_method
from perserbench.tasks import ResolvedTask


def ground_truth(task: ResolvedTask, method: str) -> ListenerModel:
    """The synthetic corpus's generative listener model, which the references built on it need;
    a one-line error for a corpus without one (a real corpus)."""
    if task.corpus.truth is None:
        raise PerserbenchError(f"method {method!r} needs a synthetic corpus with a known generative model; task "
                               f"{task.spec.name!r} has none")
    return task.corpus.truth


@register_method("oracle")
class Oracle(ReferenceMethod):
    """The synthetic corpus's true listener model with expected-F1-optimal thresholds (the
    ceiling; a reference)."""

    def predict_reference(self, context: ReferenceContext) -> tuple[np.ndarray, np.ndarray | None]:
        truth = ground_truth(context.task, "oracle")
        utterances = context.task.corpus.annotations.utterance[context.episode.query]
        proba = np.asarray(truth.listener_proba(context.episode.listener, utterances), dtype=np.float32)
        return proba, optimal_thresholds(proba)
