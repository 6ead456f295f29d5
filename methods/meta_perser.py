"""``meta-perser``: MAML from the consensus model with combined-set meta-training, derivative
annealing and per-layer per-step learnable inner learning rates (DESIGN §3).

Same code as ``maml`` (:class:`methods.maml.MamlFamily`); each component is one config field,
so an ablation is a config: ``-c init=random``, ``-c combined=false``,
``-c first_order_epochs=0``, ``-c per_step_lrs=false``, ``-c multi_step_loss=true``.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.head import _doc
from methods.maml import MamlConfig, MamlFamily
from perserbench.registry import register_method


@dataclass
class MetaPerserConfig(MamlConfig):
    init: str = _doc("consensus", "consensus pretraining: meta-learning starts from the one-model-for-everyone "
                                  "solution and only has to learn how to move away from it")
    combined: bool = _doc(True, "combined-set meta-training: inner and outer loops use the same sampled items "
                                "(support + query of them), so every labelled item shapes both")
    per_step_lrs: bool = _doc(True, "per-layer, per-step learnable inner lrs (MAML++), initialised at inner_lr")
    first_order_epochs: int = _doc(5, "derivative annealing: first-order meta-gradients for the first half of "
                                      "the meta-epochs (cheap, stable start), second order afterwards")
    multi_step_loss: bool = _doc(False, "optional MAML++ multi-step loss; off by default (no gain on the "
                                        "validation split of meta-train listeners)")


@register_method("meta-perser")
class MetaPerser(MamlFamily):
    """Consensus-pretrained MAML with combined sets, derivative annealing, learned per-step lrs."""

    Config = MetaPerserConfig
