"""The method contract (DESIGN §3), shaped like a scikit-learn estimator.

A method is a class with a nested ``Config`` dataclass (documented defaults), a constructor
that only stores its config and seed (no work), ``meta_fit(train)`` that learns from the
meta-train listeners of one fold, and ``adapt(support)`` that returns a :class:`Predictor`
for one test listener. ``adapt_many`` is the batched form the runner calls; methods with a
vectorised implementation (``torch.func.vmap``) override it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch

from perserbench.episodes import Episode, Items, LabelledItems, MetaTrainSet
from perserbench.errors import PerserbenchError
from perserbench.tasks import ListenerFold, ResolvedTask


@runtime_checkable
class Predictor(Protocol):
    """An adapted model for one listener. ``thresholds`` (per class, optional) replace the
    default 0.5 decision threshold of the metrics. They come from the support set (DESIGN §2):
    the runner reads them before the query is predicted and fails the run if predicting the
    query changed them, so a decision cannot be tuned on the query items it decides."""

    def predict_proba(self, items: Items) -> torch.Tensor:  # [N, C] probabilities in [0, 1]
        ...


@dataclasses.dataclass
class EmptyConfig:
    """This method has no options."""


class Method(ABC):
    """Base class for registered methods. Subclasses set ``Config`` and implement
    ``meta_fit`` and ``adapt``; ``name`` is set by ``@register_method``."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = EmptyConfig

    def __init__(self, config: Any = None, seed: int = 0) -> None:
        self.config = config if config is not None else self.Config()
        self.seed = seed

    @abstractmethod
    def meta_fit(self, train: MetaTrainSet) -> None:
        """Learn from the meta-train listeners of one fold (called once per fold and seed)."""

    @abstractmethod
    def adapt(self, support: LabelledItems) -> Predictor:
        """Personalize to one test listener from its K labelled support items."""

    def adapt_many(self, supports: list[LabelledItems]) -> list[Predictor]:
        """Adapt to many listeners; override with a batched implementation when there is one."""
        return [self.adapt(s) for s in supports]


@dataclasses.dataclass(frozen=True)
class ReferenceContext:
    """Privileged view of one episode, for reference methods only: the resolved task (corpus,
    annotations, a synthetic corpus's ground truth), the fold and the episode itself."""

    task: ResolvedTask
    fold: ListenerFold
    episode: Episode
    support: LabelledItems
    query: Items


class ReferenceMethod(Method):
    """A *reference*, not a competitor: it needs what the protocol hides from methods (the
    synthetic oracle needs the true listener model; the many-shot personal reference needs
    the listener's other labels). The runner calls :meth:`predict_reference` in its own
    process through an explicit path, marks the result ``reference``, and reports and the board
    show it beside the ranking, never in it. Only perserbench's built-in methods may be
    references: a plugin that declares itself one is refused."""

    def meta_fit(self, train: MetaTrainSet) -> None:
        """References learn nothing from the meta-train set unless they override this."""

    def adapt(self, support: LabelledItems) -> Predictor:
        raise PerserbenchError(f"{self.name!r} is a reference method: it predicts through the runner's reference "
                               "path (predict_reference), not through adapt")

    @abstractmethod
    def predict_reference(self, context: ReferenceContext) -> tuple[np.ndarray, np.ndarray | None]:
        """(query probabilities [Q, C], per-class thresholds [C] or None) for one episode."""


def is_reference(method: Method | type[Method]) -> bool:
    cls = method if isinstance(method, type) else type(method)
    return issubclass(cls, ReferenceMethod)


def config_dict(config: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config), default=_jsonable, sort_keys=True))


def config_hash(name: str, config: Any) -> str:
    payload = json.dumps({"method": name, "config": config_dict(config)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


class FixedProbabilities:
    """A predictor that returns the probabilities of a fixed model for every listener; used
    by methods whose adaptation leaves a shared model unchanged (e.g. ``consensus``)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def predict_proba(self, items: Items) -> torch.Tensor:
        with torch.no_grad():
            return torch.sigmoid(self.model(items.x))
