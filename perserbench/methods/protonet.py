"""``protonet``: prototypical network over listener episodes, multi-label (DESIGN §3).

The embedding is the shared head's trunk (:meth:`perserbench.head.EmotionHead.embed`: layer
weighting → Linear → ReLU), initialised from the fold's consensus model and meta-trained on
episodes of meta-train listeners (the sampler and masked loss of :mod:`perserbench.metalearn`,
listeners of a meta-batch processed together by vmap).

Multi-label prototypes: for each class, a *positive* prototype (mean embedding of the support
items that carry the class — an item contributes to every class it carries) and a *negative*
prototype (mean of the items that lack it). The class score is the scaled difference of
squared distances, ``s·(‖e − n_c‖² − ‖e − p_c‖²)``: positive when an item is nearer the
listener's examples of the class than to their non-examples. A class without a positive or
without a negative support item has no boundary; it falls back to the consensus model's
probability — so with K=1 protonet mostly *is* consensus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import vmap

from perserbench.episodes import Items, LabelledItems, MetaTrainSet
from perserbench.errors import PerserbenchError
from perserbench.head import EmotionHead, _doc, head_for, pool_features, positive_weights
from perserbench.metalearn import EpisodeSampler, Params, meta_parameters, pad_supports
from perserbench.method import Method, Predictor
from perserbench.methods.consensus import ConsensusConfig, train_consensus
from perserbench.registry import register_method

EMBED_PARAMS = ("layer_logits", "hidden.weight", "hidden.bias")


@dataclass
class ProtonetConfig:
    init: str = _doc("consensus", "start the embedding from the consensus model's trunk: it already separates "
                                  "emotions; 'random' = a fresh trunk", choices=("consensus", "random"))
    meta_epochs: int = _doc(10, "10 x 40 = 400 episodic steps. synthetic-dev (mean macro-F1 over 8 cells; "
                                "consensus 0.533): meta_epochs 3/10 -> 0.522/0.522, a tie, both below consensus "
                                "at K=5 (0.495-0.508: too few support items per class for prototypes)", ge=0)
    steps_per_epoch: int = _doc(40, "outer steps per epoch", ge=1)
    meta_batch: int = _doc(8, "listener episodes per step, as maml", ge=1)
    support: int = _doc(10, "support items per training episode: prototypes need both positives and "
                            "negatives of a class, which 5 items rarely give", ge=1)
    query: int = _doc(10, "query items per training episode", ge=1)
    lr: float = _doc(1e-3, "Adam on the embedding and the distance scale", gt=0)


def embed(meta: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
    """The head trunk in eval mode (no dropout), as a function of its parameters."""
    pooled = pool_features(x, buffers["mean"], buffers["std"], meta["layer_logits"])
    return torch.relu(F.linear(pooled, meta["hidden.weight"], meta["hidden.bias"]))


def prototypes(e: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positive and negative prototypes [C, H] of one support set and which classes have both."""
    pos_w = y * mask.unsqueeze(-1)
    neg_w = (1.0 - y) * mask.unsqueeze(-1)
    n_pos, n_neg = pos_w.sum(0), neg_w.sum(0)
    pos = (pos_w.T @ e) / n_pos.clamp(min=1.0).unsqueeze(-1)
    neg = (neg_w.T @ e) / n_neg.clamp(min=1.0).unsqueeze(-1)
    return pos, neg, (n_pos > 0) & (n_neg > 0)


def proto_logits(e: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """``s·(‖e − neg‖² − ‖e − pos‖²)`` per item and class, expanded as inner products."""
    diff = 2.0 * e @ (pos - neg).T + (neg * neg).sum(-1) - (pos * pos).sum(-1)
    return torch.exp(log_scale) * diff


class _PrototypePredictor:
    def __init__(self, meta: Params, buffers: Params, pos: torch.Tensor, neg: torch.Tensor, valid: torch.Tensor,
                 consensus: EmotionHead) -> None:
        self.meta, self.buffers, self.pos, self.neg, self.valid = meta, buffers, pos, neg, valid
        self.consensus = consensus

    def predict_proba(self, items: Items) -> torch.Tensor:
        with torch.no_grad():
            e = embed(self.meta, self.buffers, items.x)
            proto = torch.sigmoid(proto_logits(e, self.pos, self.neg, self.meta["log_scale"]))
            fallback = torch.sigmoid(self.consensus(items.x))
            return torch.where(self.valid, proto, fallback)


@register_method("protonet")
class Protonet(Method):
    """Multi-label prototypical network; classes missing from the support use consensus."""

    Config = ProtonetConfig

    def meta_fit(self, train: MetaTrainSet) -> None:
        c = self.config
        if c.init not in ("consensus", "random"):
            raise PerserbenchError(f"method 'protonet': config init={c.init!r}; choose consensus or random")
        self.consensus_ = train_consensus(train, ConsensusConfig(), self.seed)
        if c.init == "consensus":
            trunk = self.consensus_
        else:
            torch.manual_seed(self.seed)
            trunk = head_for(train, self.consensus_.hidden.out_features, 0.0, True)
        full = meta_parameters(trunk)
        meta = {k: full[k] for k in EMBED_PARAMS}
        self.buffers_ = {k: v.detach() for k, v in trunk.named_buffers()}
        with torch.no_grad():  # distance scale so that initial scores are O(1)
            sq = embed(meta, self.buffers_, train.x).pow(2).sum(-1).mean()
        meta["log_scale"] = torch.tensor(-math.log(float(sq) + 1e-6), requires_grad=True)
        pos_weight = positive_weights(train.y)
        sampler = EpisodeSampler(train, c.support, c.query, combined=False, meta_batch=c.meta_batch)
        generator = torch.Generator().manual_seed(self.seed)
        optimizer = torch.optim.Adam([p for p in meta.values() if p.requires_grad], lr=c.lr)

        def episode_loss(xs: torch.Tensor, ys: torch.Tensor, ms: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor,
                         mq: torch.Tensor) -> torch.Tensor:
            pos, neg, valid = prototypes(embed(meta, self.buffers_, xs), ys, ms)
            logits = proto_logits(embed(meta, self.buffers_, xq), pos, neg, meta["log_scale"])
            per = F.binary_cross_entropy_with_logits(logits, yq, pos_weight=pos_weight, reduction="none")
            weight = mq.unsqueeze(-1) * valid.float()
            return (per * weight).sum() / weight.sum().clamp(min=1.0)

        self.history_: list[float] = []
        for _ in range(c.meta_epochs):
            losses = []
            for _ in range(c.steps_per_epoch):
                b = sampler.sample(generator)
                optimizer.zero_grad()
                loss = vmap(episode_loss)(b.xs, b.ys, b.ms, b.xq, b.yq, b.mq).mean()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            self.history_.append(sum(losses) / max(len(losses), 1))
        self.meta_ = {k: v.detach() for k, v in meta.items()}

    def adapt(self, support: LabelledItems) -> Predictor:
        return self.adapt_many([support])[0]

    def adapt_many(self, supports: list[LabelledItems]) -> list[Predictor]:
        if not supports:
            return []
        xs, ys, ms = pad_supports(supports)
        with torch.no_grad():
            e = embed(self.meta_, self.buffers_, xs)
            pos, neg, valid = vmap(prototypes)(e, ys, ms)
        return [_PrototypePredictor(self.meta_, self.buffers_, pos[i], neg[i], valid[i], self.consensus_)
                for i in range(len(supports))]
