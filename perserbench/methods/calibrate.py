"""``calibrate``: personalization as a small listener-specific transform of the consensus
model's logits, fitted by MAP under an empirical-Bayes prior (issue 14, item 1).

A listener mostly differs from the consensus in *how they map* what they hear to labels (one
says "frustrated" where others say "angry", one rarely says "neutral"), not in what the audio
contains. So the consensus model stays frozen and each listener gets

    logits' = M · logits + b + margin terms,   M = I + Δ  (C×C class mixing),  b  (C per-class biases),

``C² + 3C`` numbers instead of a whole head, identity at θ = 0. The margin terms weigh each
class's distance to the item's most evident class (:func:`margin_features`): how readily a
listener adds a class they hear less clearly. Class ``c``'s row ``θ_c = [Δ_c | b_c | a_c]`` is
a logistic regression on the features ``[logits, 1, margins_c]``, so every fit is convex and
separates into one small problem per class.

**Prior (empirical Bayes).** ``meta_fit`` trains the consensus model
(:func:`~perserbench.methods.consensus.train_consensus`), fits every meta-train listener's
transform on that listener's own training labels and sets a Gaussian prior per parameter from
those fits. It is EM on the hierarchical model with a Laplace posterior per listener: listener
fits are MAP under the current prior, the prior mean is their mean, the prior variance their
spread *plus* their posterior variances (a listener with few labels does not inflate it),
floored at ``min_prior_std²`` so a dozen meta-train listeners cannot pin a parameter.

**Mixture prior (empirical Bayes over listeners).** Listeners come in schools: people who
swap the same classes, or share a style. A Gaussian prior cannot say "this listener hears like
those", so the prior is a mixture: the population Gaussian (weight ``population_weight``) and
one narrower component per meta-train listener, centred on that listener's own fitted
transform. Each component gives its own MAP transform and Laplace posterior; the support
weighs them by their Laplace evidence (:func:`log_evidence`, the Occam factor included), and
the prediction mixes the components' posterior predictives. With few items the weights stay
near the prior's; with many, the components that explain the support take over.

**Adaptation.** The MAP transform on the K support items (BCE + the prior's negative
log-density) by damped Newton steps from the prior mean. Each (listener, class) problem is
solved on its own to convergence in float64, batched over the listeners of one
``adapt_many`` call with no coupling, so the batched result equals each listener fitted alone
(the runner's independence audit) and is deterministic. With K=1 the prior dominates and the
transform stays at the population solution.

**Prediction.** The posterior predictive, not the plug-in MAP: the Laplace posterior's
variance ``v`` of each logit shrinks it (MacKay's probit approximation ``s/√(1 + πv/8)``), so
an uncertain personal transform is trusted less. Rare emotions are balanced at the *decision*:
``decision_shift · log w_c`` is added to the logits, ``w`` = negatives/positives of class ``c``
among meta-train annotations (:func:`perserbench.head.positive_weights`); 1 would decide at the
class's base rate. The likelihood itself stays unweighted, because class-balanced BCE counts a
rare-class positive up to ``w`` times and a single support item then overrides the prior (see
the config's ``weighted_loss`` for what that cost on ``synthetic-dev``).

**Pooled with an annotator model** (``annotator_weight``). The transform takes ``C² + 3C``
numbers per listener, which 20 labels pin only loosely; where listeners differ in base rates
and in how readily they tick extra classes, a model with ``C + 2`` numbers per listener
(:mod:`perserbench.annotator`: a log-prior on the primary choice and a tick curve, over an
evidence head of its own) learns more from the same labels, but it cannot express class
confusion. Neither is right for every way listeners differ, so the prediction pools both
logarithmically: each model's log-odds relative to its own decision threshold, averaged with a
fixed weight chosen on the development corpora. Choosing one model per listener by marginal
likelihood was tried and does not work (docs/generators.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from perserbench.annotator import AnnotatorPosterior, FittedAnnotators, fit_annotators
from perserbench.episodes import Items, LabelledItems, MetaTrainSet
from perserbench.errors import PerserbenchError
from perserbench.head import EmotionHead, _doc, positive_weights
from perserbench.metalearn import pad_supports
from perserbench.method import Method, Predictor
from perserbench.methods.consensus import ConsensusConfig, train_consensus
from perserbench.registry import register_method

MIXINGS = ("full", "diagonal", "none")
# Newton step sizes tried per problem, largest first (backtracking on a fixed grid, so the
# batched and the one-listener computations take the same decisions), and the Armijo constant.
STEP_SIZES = tuple(0.5 ** i for i in range(12))
ARMIJO = 1e-4
# A Newton decrement (gᵀH⁻¹g) this small is float noise at the optimum: take the full step.
NEWTON_DECREMENT_TOL = 1e-12
CONVERGED_STEP = 1e-9

# Evidence for the defaults (DESIGN §2: tuned on the development task only). The figures below and
# in the fields were measured with the Gaussian prior alone (population_weight=1), except the two
# mixture fields':
# benchmarks/validate_defaults.py --task synthetic-dev --method calibrate [--grid ...], all 4 folds,
# both scenarios, method seed 0. Macro-F1 per cell as "seen K=1/5/10/20 | unseen K=1/5/10/20 (mean)";
# consensus 0.526 | 0.540 at every K (0.533); finetune 0.522/0.536/0.546/0.551 | 0.526/0.552/0.561/0.572
# (0.546); the oracle ceiling 0.715 | 0.733. Gaussian prior: 0.531/0.538/0.551/0.563 | 0.540/0.548/0.567/0.585
# (0.553); with method seed 1: 0.529/0.545/0.550/0.565 | 0.540/0.552/0.566/0.587 (0.554; consensus
# 0.529 | 0.538, finetune 0.549).


@dataclass
class CalibrateConfig:
    mixing: str = _doc("full", "class-mixing matrix M: 'full' (C×C: a listener may hear one class as another), "
                               "'diagonal' (a logit scale per class) or 'none' (biases only). synthetic-dev: "
                               "full 0.553; diagonal 0.530/0.536/0.546/0.556 | 0.537/0.544/0.553/0.569 (0.546); "
                               "none 0.530/0.534/0.541/0.543 | 0.537/0.542/0.551/0.564 (0.543): the mixing "
                               "terms are what K=10-20 items can learn; the prior keeps them quiet at K=1",
                       choices=("full", "diagonal", "none"))
    margins: bool = _doc(True, "also give each class its logit margin to the item's most evident class and the "
                               "margin's exponential (margin_features): how readily a listener adds a less "
                               "evident class. Mean macro-F1 over 8 cells, development corpora styles / "
                               "confusion / prior-shift: False -> 0.555/0.533/0.584, True -> 0.562/0.539/0.588 "
                               "(K=5 seen/unseen: styles 0.542/0.551 -> 0.546/0.556, confusion 0.526/0.532 -> "
                               "0.532/0.534, prior-shift 0.575/0.578 -> 0.579/0.584); on their uniform controls "
                               "0.701/0.703/0.711 -> 0.707/0.714/0.717. The margin alone: 0.560/0.536/0.588; its "
                               "exponential alone: 0.559/0.539/0.586; the margin and a top-class indicator: "
                               "0.560/0.539/0.588; feature centring or a plug-in (no probit) prediction: ties")
    decision_shift: float = _doc(0.75, "multiple of log(negatives/positives) of meta-train labels added to each "
                                       "class's predictive logit (0 = decide at probability 0.5, 1 = at the "
                                       "class's base rate). synthetic-dev: 0.5 -> 0.517/0.543/0.560/0.572 | "
                                       "0.525/0.548/0.561/0.583 (0.551, below consensus at K=1); 0.75 -> 0.553 "
                                       "(never below consensus); 1.0 -> 0.523/0.530/0.538/0.551 | "
                                       "0.534/0.541/0.553/0.557 (0.541)", ge=0)
    weighted_loss: bool = _doc(False, "class-balanced BCE (perserbench.head.positive_weights of meta-train labels) "
                                      "in the MAP objective instead of the plain likelihood plus a decision "
                                      "shift. synthetic-dev, with decision_shift=0: 0.510/0.534/0.553/0.567 | "
                                      "0.532/0.542/0.572/0.591 (0.550): as good at K>=10 but 0.016 below "
                                      "consensus at K=1, because a rare-class positive counts up to w times and "
                                      "one support item overrides the prior (with decision_shift=0.75 as well: "
                                      "0.509, balanced twice)")
    prior_scale: float = _doc(1.0, "multiplies the prior precision; 1 = the empirical-Bayes prior as estimated. "
                                   "synthetic-dev: 0.5 -> 0.528/0.532/0.546/0.561 | 0.536/0.543/0.556/0.582 "
                                   "(0.548); 2 -> 0.526/0.540/0.549/0.562 | 0.538/0.548/0.559/0.579 (0.550); "
                                   "1 -> 0.553: the estimated prior needs no tempering", gt=0)
    min_prior_std: float = _doc(0.05, "floor on the prior's standard deviation per parameter (the spread is "
                                      "estimated from a dozen meta-train listeners). Estimated spreads on "
                                      "synthetic-dev are 0.1-0.6 (mixing) and 0.8-1.9 (biases), so the floor "
                                      "rarely binds: 0.2 -> 0.531/0.537/0.551/0.565 | 0.540/0.548/0.565/0.582 "
                                      "(0.552), a tie with 0.05 (0.553)", gt=0)
    em_iterations: int = _doc(10, "EM rounds for the prior (meta-train listener fits <-> prior mean and variance); "
                                  "on synthetic-dev round 10 moves the prior mean by < 0.003 and the variance "
                                  "by < 0.01", ge=1)
    population_weight: float = _doc(0.75, "prior mass of the population Gaussian (mean and per-parameter "
                                          "variance from the meta-train listeners); the rest is split evenly over "
                                          "one component per meta-train listener, centred on that listener's own "
                                          "transform with bandwidth x the Gaussian's spread. The support weighs "
                                          "the components by their Laplace evidence, so a few items can say 'this "
                                          "listener hears like those' (annotator schools); 1 = the Gaussian alone. "
                                          "Mean macro-F1 over 8 cells, development corpora styles / confusion / "
                                          "prior-shift / styles-uniform: 1 -> 0.553/0.527/0.584/0.701, 0.75 -> "
                                          "0.555/0.533/0.584/0.701, 0.5 -> 0.553/0.536/0.582/0.702, 0 -> "
                                          "0.548/0.535/0.575/0.703; 0.75 is the only weight at or above the "
                                          "Gaussian on every corpus (K=5 seen/unseen, 1 -> 0.75: styles "
                                          "0.538/0.548 -> 0.542/0.551, confusion 0.523/0.523 -> 0.526/0.532, "
                                          "prior-shift 0.575/0.577 -> 0.575/0.578). It costs one MAP fit per "
                                          "component: a synthetic-dev run 26.4 -> 28.2 CPU-s", ge=0, le=1)
    bandwidth: float = _doc(0.5, "listener components' standard deviation as a fraction of the population "
                                 "Gaussian's (with population_weight < 1). At population_weight 0.5, mean "
                                 "macro-F1 styles / confusion / prior-shift: bandwidth 0.25 -> 0.552/0.534/0.581, "
                                 "0.5 -> 0.553/0.536/0.582, 0.75 -> 0.553/0.534/0.584: flat", gt=0)
    annotator_weight: float = _doc(0.25, "weight of the annotator model (perserbench.annotator: a listener as a "
                                         "log-prior on the primary choice and a tick curve, C + 2 numbers, with an "
                                         "importance-sampled posterior from the support) in a logarithmic opinion "
                                         "pool with the transform: each model's log-odds relative to its own "
                                         "decision threshold, averaged with this weight; 0 = the transform alone. "
                                         "Mean macro-F1 over 8 cells, development corpora styles / confusion / "
                                         "prior-shift / styles-uniform, weight 0 -> 0.561/0.539/0.588/0.707, "
                                         "0.25 -> 0.568/0.542/0.597/0.714, 0.5 -> 0.572/0.536/0.601/0.714: 0.25 is "
                                         "the only weight at or above the transform alone on every corpus",
                                   ge=0, le=1)
    annotator_members: int = _doc(1000, "population listeners drawn for the annotator model's importance-sampled "
                                        "posterior (with annotator_weight > 0). Development corpora confusion / "
                                        "prior-shift at annotator_weight 0.25: 4000 -> 0.541/0.598, 1000 -> "
                                        "0.542/0.597; a support's likelihood costs in proportion", ge=100)
    newton_steps: int = _doc(30, "upper bound on damped Newton steps per fit; fits stop once every problem has "
                                 "converged (4-12 steps on synthetic-dev)", ge=1)


LOG_ODDS_FLOOR = 1e-6  # probabilities pooled in log-odds are kept in [1e-6, 1 - 1e-6]
GROUP_ELEMENTS = 2**22  # Newton-feature elements per listener group of the prior fit (32 MB in float64)


def margin_features(z: torch.Tensor) -> torch.Tensor:
    """Each class's logit margin to the item's most evident class, ``m_c = z_c − max_k z_k``
    (≤ 0), and ``exp(m_c)`` (in (0, 1]), as ``[..., C, 2]``.

    Why: listeners differ in how readily they add a class that is *not* the most evident one
    (one ticks every plausible emotion, another only the clearest), and that depends on how far
    the class is from the top, which no linear function of the logits expresses."""
    margin = z - z.max(-1, keepdim=True).values
    return torch.stack([margin, margin.exp()], dim=-1)


def logit_features(z: torch.Tensor, mixing: str, margins: bool = False) -> torch.Tensor:
    """Per-class regression features ``[..., C, d]`` for consensus logits ``z`` [..., C]:
    class ``c``'s transformed logit is ``z_c + θ_c · features[..., c, :]``. The mixing's
    features come first (for ``full`` they are the same ``[z, 1]`` for every class), then
    :func:`margin_features` if ``margins``."""
    ones = torch.ones_like(z).unsqueeze(-1)
    if mixing == "full":
        base = torch.cat([z.unsqueeze(-2).expand(*z.shape, z.shape[-1]), ones], dim=-1)
    elif mixing == "diagonal":
        base = torch.cat([z.unsqueeze(-1), ones], dim=-1)
    else:
        base = ones
    return torch.cat([base, margin_features(z)], dim=-1) if margins else base


def _data_loss(s: torch.Tensor, y: torch.Tensor, w_pos: torch.Tensor, w_neg: torch.Tensor) -> torch.Tensor:
    """Weighted BCE of logits ``s`` [..., K, C] summed over items (padded rows weigh 0) → [..., C]."""
    return (w_pos * y * F.softplus(-s) + w_neg * (1.0 - y) * F.softplus(s)).sum(-2)


def map_fit(z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, pos_weight: torch.Tensor, mu: torch.Tensor,
            precision: torch.Tensor, mixing: str, steps: int, init: torch.Tensor | None = None,
            margins: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAP transforms of N listeners at once: ``z`` [N, K, C] consensus logits of their items,
    ``y`` [N, K, C] labels, ``mask`` [N, K] (0 = padding), BCE ``pos_weight`` [C], prior
    ``mu`` and ``precision`` [C, d] (or one prior per listener, [N, C, d]).

    Damped Newton per (listener, class) problem from ``init`` (default: the prior mean); each
    step backtracks on a fixed grid of step sizes to the first that meets the Armijo
    condition. Only per-problem reductions, so a listener's result does not depend on who else
    is in the batch. ``margins``: the features of :func:`logit_features` with margins. Returns
    the transforms [N, C, d], the Hessians [N, C, d, d] at the optimum (the Laplace posterior
    precision) and the objective there [N, C]."""
    z, y = z.double(), y.double()
    m = mask.double().unsqueeze(-1)  # [N, K, 1]
    w_pos = m * pos_weight.double()
    w_neg = m.expand_as(y)
    mu, precision = mu.double(), precision.double()
    mu = mu.expand(z.shape[0], *mu.shape[-2:])  # one prior mean for all, or one per listener
    theta = (mu if init is None else init.double()).clone()
    # Each (listener, class) problem's features laid out as one [K, d] matrix, so every sum over
    # items is a batched matrix product (BLAS), one per step for the gradient and one for the
    # Hessian, however the features are made up.
    rows = logit_features(z, mixing, margins).transpose(1, 2).contiguous()  # [N, C, K, d]

    def project(theta: torch.Tensor) -> torch.Tensor:
        """feats · θ per item and class [N, K, C]."""
        return (rows @ theta.unsqueeze(-1)).squeeze(-1).transpose(1, 2)

    def newton_system(theta: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s = z + project(theta)
        p = torch.sigmoid(s)
        residual = w_neg * (1.0 - y) * p - w_pos * y * (1.0 - p)  # d loss / d s
        curvature = (w_pos * y + w_neg * (1.0 - y)) * p * (1.0 - p)
        data_gradient = (residual.transpose(1, 2).unsqueeze(-2) @ rows).squeeze(-2)  # [N, C, d]
        data_hessian = (rows * curvature.transpose(1, 2).unsqueeze(-1)).transpose(-1, -2) @ rows
        gradient = data_gradient + precision * (theta - mu)
        hessian = data_hessian + torch.diag_embed(precision.expand_as(theta))
        value = _data_loss(s, y, w_pos, w_neg) + 0.5 * (precision * (theta - mu).square()).sum(-1)
        return s, value, gradient, hessian

    for _ in range(steps):
        s, value, gradient, hessian = newton_system(theta)
        direction = torch.linalg.solve(hessian, gradient.unsqueeze(-1)).squeeze(-1)  # [N, C, d]
        # Along θ − t·δ the logits move linearly, s − t·(feats·δ): each trial costs one loss.
        s_dir = project(direction)
        decrease = (gradient * direction).sum(-1)  # ≥ 0: the Hessian is positive definite
        pending = decrease > NEWTON_DECREMENT_TOL
        size = torch.where(pending, 0.0, 1.0).to(decrease)
        for t in STEP_SIZES:  # 0 stays for a problem no step size improves
            trial = _data_loss(s - t * s_dir, y, w_pos, w_neg) + 0.5 * (
                precision * (theta - t * direction - mu).square()).sum(-1)
            accept = pending & (trial <= value - ARMIJO * t * decrease)
            size = torch.where(accept, t, size)
            pending = pending & ~accept
            if not bool(pending.any()):
                break
        step = size.unsqueeze(-1) * direction
        theta = theta - step
        if float(step.abs().max()) < CONVERGED_STEP:
            break
    _, value, _, hessian = newton_system(theta)
    return theta, hessian, value


def log_evidence(value: torch.Tensor, hessian: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Laplace approximation of log p(support | prior N(mu, precision⁻¹)) [N], up to a constant
    shared by all priors, from :func:`map_fit`'s objective ``value`` [N, C] (BCE + prior
    quadratic at the MAP) and ``hessian`` [N, C, d, d] under that prior: −value − ½ log det H +
    ½ log det(prior precision), summed over classes. Why the last term: a narrow prior that fits
    is more probable than a broad one that fits as well (the Occam factor), which is what lets a
    mixture choose between them."""
    log_det_precision = precision.double().log().expand(*hessian.shape[:-1]).sum(-1)
    return (0.5 * log_det_precision - 0.5 * torch.linalg.slogdet(hessian)[1] - value).sum(-1)


def fit_prior(z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, pos_weight: torch.Tensor, mixing: str,
              iterations: int, min_std: float, steps: int, margins: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Empirical-Bayes Gaussian prior (mean, variance) [C, d] of the listener transform from
    meta-train listeners' items (``z``, ``y``, ``mask`` as in :func:`map_fit`): EM with a
    Laplace posterior per listener, from the identity transform with unit variance."""
    return fit_prior_groups([(z, y, mask)], pos_weight, mixing, iterations, min_std, steps, margins)[:2]


def fit_prior_groups(groups: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], pos_weight: torch.Tensor,
                     mixing: str, iterations: int, min_std: float, steps: int,
                     margins: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`fit_prior` over listeners given in groups, each its own padded ``(z, y, mask)``
    (:func:`listener_groups`): the per-listener fits are independent, so grouping listeners of
    similar workload only bounds the padding. One group is exactly :func:`fit_prior`. Also
    returns the listeners' own transforms [listeners, C, d] (MAP under the last-but-one prior),
    the listener components of the mixture prior (``population_weight`` < 1)."""
    z0 = groups[0][0]
    d = logit_features(z0[:1, :1], mixing, margins).shape[-1]
    mu = torch.zeros(z0.shape[-1], d, dtype=torch.float64)
    var = torch.ones_like(mu)
    thetas: list[torch.Tensor | None] = [None] * len(groups)
    for _ in range(iterations):
        posterior = []
        for i, (z, y, mask) in enumerate(groups):
            thetas[i], hessian, _ = map_fit(z, y, mask, pos_weight, mu, 1.0 / var, mixing, steps, init=thetas[i],
                                            margins=margins)
            posterior.append(torch.linalg.inv(hessian).diagonal(dim1=-2, dim2=-1))
        theta = thetas[0] if len(groups) == 1 else torch.cat(thetas)
        posterior_var = posterior[0] if len(groups) == 1 else torch.cat(posterior)
        mu = theta.mean(0)
        var = ((theta - mu).square() + posterior_var).mean(0).clamp(min=min_std ** 2)
    return mu, var, theta


def listener_rows(train: MetaTrainSet) -> list[torch.Tensor]:
    """The annotation rows of each meta-train listener with a label, listener by listener."""
    return [r for r in (torch.nonzero(train.listener == i).squeeze(1) for i in range(len(train.listeners))) if len(r)]


def listener_table(train: MetaTrainSet, logits: torch.Tensor,
                   rows: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Meta-train annotations grouped by listener and padded (:func:`pad_supports`, as the
    supports are): the consensus logits [L, A, C] of the items each listener labelled, their
    labels [L, A, C] and a mask [L, A] (for the listeners whose annotation rows are ``rows``;
    default: :func:`listener_rows`)."""
    return pad_supports([LabelledItems(logits[train.utterance[r]], train.y[r])
                         for r in (listener_rows(train) if rows is None else rows)])


def listener_groups(train: MetaTrainSet, logits: torch.Tensor, mixing: str, margins: bool = False,
                    budget: int = GROUP_ELEMENTS) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """:func:`listener_table` in groups whose Newton features (listeners × width × C × d) stay
    within ``budget`` elements. Why: under a heavy-tailed workload one listener labels tens of
    thousands of items and most label a few dozen, so one table padded to the heaviest is
    quadratic (39 GB for 1,700 listeners of a 160,000-utterance corpus); listeners sorted by
    workload and grouped greedily pad only to their group's heaviest. A table that fits the
    budget is one group: :func:`listener_table` itself."""
    rows = listener_rows(train)
    per_item = train.n_classes * logit_features(logits[:1, :1].new_zeros(1, train.n_classes), mixing,
                                                margins).shape[-1]
    if len(rows) * max(len(r) for r in rows) * per_item <= budget:
        return [listener_table(train, logits, rows)]
    groups: list[list[torch.Tensor]] = []
    for r in sorted(rows, key=len):
        if groups and (len(groups[-1]) + 1) * len(r) * per_item <= budget:
            groups[-1].append(r)
        else:
            groups.append([r])
    return [listener_table(train, logits, group) for group in groups]


class CalibratedPredictor:
    """The frozen consensus head, then one listener's transform: posterior-predictive logits
    (Laplace covariance, probit approximation) plus the decision ``shift`` [C]. Under the
    mixture prior the posterior is a mixture: ``theta`` [J, C, d] and ``cov`` [J, C, d, d] per
    component, mixed with ``weights`` [J]; the Gaussian prior alone is one component, weight 1."""

    def __init__(self, head: EmotionHead, theta: torch.Tensor, cov: torch.Tensor, weights: torch.Tensor,
                 shift: torch.Tensor, mixing: str, margins: bool) -> None:
        self.head, self.theta, self.cov, self.weights = head, theta, cov, weights
        self.shift, self.mixing, self.margins = shift, mixing, margins

    def predict_proba(self, items: Items) -> torch.Tensor:
        with torch.no_grad():
            return self.proba_from_logits(self.head(items.x).double())

    def proba_from_logits(self, z: torch.Tensor) -> torch.Tensor:
        """The listener's probabilities [Q, C] from base logits ``z`` [Q, C] (float64)."""
        feats = logit_features(z, self.mixing, self.margins)  # [Q, C, d]
        s = z + torch.einsum("qcd,kcd->kqc", feats, self.theta)  # [J, Q, C]
        var = torch.einsum("qca,kcab,qcb->kqc", feats, self.cov, feats)
        p = torch.sigmoid(s / torch.sqrt(1.0 + math.pi * var / 8.0) + self.shift)
        return torch.einsum("k,kqc->qc", self.weights, p).float()


class PooledPredictor:
    """The transform's predictor and the annotator model's posterior for one listener, pooled
    logarithmically: ``σ((1 − w) · logit p_transform + w · (logit p_annotator − logit t))``, where
    ``t`` are the annotator's reference thresholds. Each model's log-odds are taken relative to
    its own decision boundary (the transform decides at 0.5 after its decision shift), so the
    pool decides at 0.5 and says "yes" where the weighted evidence of the two does."""

    def __init__(self, transform: CalibratedPredictor, annotator: AnnotatorPosterior, weight: float) -> None:
        self.transform, self.annotator, self.weight = transform, annotator, weight

    def predict_proba(self, items: Items) -> torch.Tensor:
        with torch.no_grad():
            transform = _log_odds(self.transform.predict_proba(items).double())
            annotator = _log_odds(self.annotator.marginals(items.x)) - _log_odds(torch.from_numpy(
                self.annotator.thresholds).double())
        return torch.sigmoid((1.0 - self.weight) * transform + self.weight * annotator).float()


def _log_odds(p: torch.Tensor) -> torch.Tensor:
    """logit of probabilities kept :data:`LOG_ODDS_FLOOR` away from 0 and 1 (a probability of
    exactly 0 or 1 would make one model's vote infinite)."""
    return torch.logit(p.clamp(LOG_ODDS_FLOOR, 1.0 - LOG_ODDS_FLOOR))


@register_method("calibrate")
class Calibrate(Method):
    """Consensus logits through a listener's class mixing and biases, MAP under an empirical-Bayes prior,
    pooled with an annotator model's posterior (``annotator_weight``).

    The consensus model is frozen; only ``C² + 3C`` numbers per listener are fitted on the
    support, and the prior learned from meta-train listeners decides how far K items may move them."""

    Config = CalibrateConfig

    def _check(self) -> None:
        c = self.config
        if not 0 <= c.population_weight <= 1:
            raise PerserbenchError(f"method 'calibrate': config population_weight={c.population_weight} must be in "
                                   "[0, 1]")
        if c.mixing not in MIXINGS:
            raise PerserbenchError(f"method 'calibrate': config mixing={c.mixing!r}; choose one of {', '.join(MIXINGS)}")
        for key in ("prior_scale", "min_prior_std", "bandwidth"):
            if not getattr(c, key) > 0:
                raise PerserbenchError(f"method 'calibrate': config {key}={getattr(c, key)} must be > 0")
        for key in ("em_iterations", "newton_steps"):
            if getattr(c, key) < 1:
                raise PerserbenchError(f"method 'calibrate': config {key}={getattr(c, key)} must be at least 1")

    def meta_fit(self, train: MetaTrainSet) -> None:
        self._check()
        self.head_ = train_consensus(train, ConsensusConfig(), self.seed).eval()
        with torch.no_grad():
            self.fit_prior(train, train.features.map(self.head_).double())
        self.annotators_: FittedAnnotators | None = None
        if self.config.annotator_weight > 0:
            self.annotators_ = fit_annotators(train, self.seed, self.config.annotator_members)

    def fit_prior(self, train: MetaTrainSet, logits: torch.Tensor) -> None:
        """The decision shift and the empirical-Bayes prior from the meta-train annotations and
        the base logits of the meta-train utterances [U, C] (the consensus model's; a diagnostic
        such as ``benchmarks/family_ceiling.py`` may pass others)."""
        c = self.config
        balance = positive_weights(train.y).double()
        self.loss_weight_ = balance if c.weighted_loss else torch.ones_like(balance)
        self.shift_ = c.decision_shift * balance.log()
        groups = listener_groups(train, logits, c.mixing, c.margins)
        self.prior_mean_, self.prior_var_, self.listeners_ = fit_prior_groups(
            groups, self.loss_weight_, c.mixing, c.em_iterations, c.min_prior_std, c.newton_steps, c.margins)

    def adapt(self, support: LabelledItems) -> Predictor:
        return self.adapt_many([support])[0]

    def adapt_many(self, supports: list[LabelledItems]) -> list[Predictor]:
        if not supports:
            return []
        xs, ys, ms = pad_supports(supports)
        with torch.no_grad():
            z = self.head_(xs.flatten(0, 1)).view(*xs.shape[:2], -1)
        transforms = self.adapt_logits(z, ys, ms)
        if self.annotators_ is None:
            return transforms
        annotators = self.annotators_.posteriors([(support.x, support.y) for support in supports])
        return [PooledPredictor(transform, annotator, self.config.annotator_weight)
                for transform, annotator in zip(transforms, annotators, strict=True)]

    def adapt_logits(self, z: torch.Tensor, ys: torch.Tensor, ms: torch.Tensor) -> list[CalibratedPredictor]:
        """One predictor per support from its base logits ``z`` [N, K, C], labels ``ys``
        [N, K, C] and padding mask ``ms`` [N, K] (as :func:`~perserbench.metalearn.pad_supports`)."""
        c = self.config
        if c.population_weight == 1:
            theta, hessian, _ = map_fit(z, ys, ms, self.loss_weight_, self.prior_mean_,
                                        c.prior_scale / self.prior_var_, c.mixing, c.newton_steps, margins=c.margins)
            cov, ones = torch.linalg.inv(hessian), torch.ones(1, dtype=torch.float64)
            return [CalibratedPredictor(self.head_, theta[i:i + 1], cov[i:i + 1], ones, self.shift_, c.mixing, c.margins)
                    for i in range(len(z))]
        return self.mixture_predictors(*self.component_fits(z, ys, ms))

    def mixture_predictors(self, theta: torch.Tensor, hessian: torch.Tensor,
                           joint: torch.Tensor) -> list[CalibratedPredictor]:
        """One predictor per support from :meth:`component_fits`' output: the components'
        Laplace posteriors mixed by their posterior weights."""
        c = self.config
        weights = torch.softmax(joint, dim=1)
        cov = torch.linalg.inv(hessian)
        return [CalibratedPredictor(self.head_, theta[i], cov[i], weights[i], self.shift_, c.mixing, c.margins)
                for i in range(len(theta))]

    def component_fits(self, z: torch.Tensor, ys: torch.Tensor,
                       ms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One MAP fit per (support, prior component) for supports as :meth:`adapt_logits` takes
        them: the transforms [N, J, C, d], their Hessians [N, J, C, d, d] and log(component
        weight × Laplace evidence) [N, J], whose log-sum-exp over J is the support's log marginal
        likelihood under the prior (what ``benchmarks/annotator_model.py`` compares with another
        listener model's). Component 0 is the population Gaussian, component j ≥ 1 meta-train
        listener j − 1 (none with the Gaussian prior alone, ``population_weight = 1``)."""
        c = self.config
        listeners = self.listeners_[:0] if c.population_weight == 1 else self.listeners_
        means = torch.cat([self.prior_mean_.unsqueeze(0), listeners])
        base = c.prior_scale / self.prior_var_
        precisions = torch.stack([base] + [base / c.bandwidth ** 2] * len(listeners))
        log_prior = torch.tensor([c.population_weight] + [(1 - c.population_weight) / max(len(listeners), 1)]
                                 * len(listeners), dtype=torch.float64).log()
        n, j = len(z), len(means)
        # Row i·J + j of one batched fit is support i under component j.
        zr, yr, mr = (t.repeat_interleave(j, dim=0) for t in (z, ys, ms))
        mu, precision = means.repeat(n, 1, 1), precisions.repeat(n, 1, 1)
        theta, hessian, value = map_fit(zr, yr, mr, self.loss_weight_, mu, precision, c.mixing, c.newton_steps,
                                        margins=c.margins)
        joint = log_evidence(value, hessian, precision).view(n, j) + log_prior
        return theta.view(n, j, *theta.shape[1:]), hessian.view(n, j, *hessian.shape[1:]), joint
