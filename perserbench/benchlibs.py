"""The meta-learning libraries people use, on the benchmark's problem (``perserbench bench``).

Each library column computes the same mathematics as the batched core's MAML workload and as
:mod:`perserbench.bench`'s reference loop: the same :class:`~perserbench.head.EmotionHead`
(eval mode), the same class-balanced BCE, ``steps`` plain SGD inner steps with a fixed
learning rate on the four inner parameters (``INNER_PARAMS``: the layer weighting is
meta-learned but not adapted), the query loss after the last step averaged over the
meta-batch, second order. ``tests/test_bench.py`` checks every column's meta-gradient and
adapted parameters against the reference loop, so a column that drifts from that mathematics
fails a test instead of timing something else.

Each column is written the way the library's own MAML examples are: one listener after
another, the outer loss backpropagated per listener (higher's ``examples/maml-omniglot.py``,
torchopt's ``examples/few-shot/maml_omniglot.py`` with its object-oriented ``MetaSGD``,
learn2learn's ``MAML.clone``/``adapt`` loop), and torchopt's functional API as its
``examples/FuncTorch/maml_omniglot_vmap.py`` runs it, the tasks of a meta-batch vmapped
together (column ``torchopt (functional)``). The libraries are optional (the
``bench`` extra; learn2learn needs a source build on Python 3.11, see
``benchmarks/install_learn2learn.sh``): a missing one is a skipped column, with the reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from perserbench.head import EmotionHead, balanced_bce
from perserbench.metalearn import INNER_PARAMS, EpisodeBatch, Params

# meta_backward(head, batch, pos_weight, steps, lr): leaves the mean meta-gradient in .grad
MetaBackward = Callable[[EmotionHead, EpisodeBatch, torch.Tensor, int, float], None]
# adapt(head, xs, ys, pos_weight, steps, lr): each listener's adapted INNER_PARAMS
Adapt = Callable[[EmotionHead, torch.Tensor, torch.Tensor, torch.Tensor, int, float], list[Params]]


def _inner_modules(head: EmotionHead) -> list[torch.nn.Module]:
    return [head.hidden, head.out]


def _inner_tensors(head: EmotionHead) -> list[torch.Tensor]:
    return [head.hidden.weight, head.hidden.bias, head.out.weight, head.out.bias]  # INNER_PARAMS order


# --------------------------------------------------------------------------------- higher


def higher_meta_backward(head: EmotionHead, batch: EpisodeBatch, pos_weight: torch.Tensor, steps: int,
                         lr: float) -> None:
    import higher

    inner_opt = torch.optim.SGD(_inner_tensors(head), lr=lr)
    n = len(batch.xs)
    for i in range(n):
        with higher.innerloop_ctx(head, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(balanced_bce(fmodel(batch.xs[i]), batch.ys[i], pos_weight))
            (balanced_bce(fmodel(batch.xq[i]), batch.yq[i], pos_weight) / n).backward()


def higher_adapt(head: EmotionHead, xs: torch.Tensor, ys: torch.Tensor, pos_weight: torch.Tensor, steps: int,
                 lr: float) -> list[Params]:
    import higher

    inner_opt = torch.optim.SGD(_inner_tensors(head), lr=lr)
    names = [name for name, _ in head.named_parameters()]
    out = []
    for i in range(len(xs)):
        with higher.innerloop_ctx(head, inner_opt, track_higher_grads=False) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(balanced_bce(fmodel(xs[i]), ys[i], pos_weight))
            fast = dict(zip(names, fmodel.fast_params))
            out.append({k: fast[k].detach() for k in INNER_PARAMS})
    return out


# -------------------------------------------------------------------------------- torchopt


def torchopt_meta_backward(head: EmotionHead, batch: EpisodeBatch, pos_weight: torch.Tensor, steps: int,
                           lr: float) -> None:
    import torchopt

    inner = torch.nn.ModuleList(_inner_modules(head))
    inner_opt = torchopt.MetaSGD(inner, lr=lr)
    state = torchopt.extract_state_dict(inner, by="reference", detach_buffers=True)
    opt_state = torchopt.extract_state_dict(inner_opt, by="reference")
    n = len(batch.xs)
    for i in range(n):
        for _ in range(steps):
            inner_opt.step(balanced_bce(head(batch.xs[i]), batch.ys[i], pos_weight))
        (balanced_bce(head(batch.xq[i]), batch.yq[i], pos_weight) / n).backward()
        torchopt.recover_state_dict(inner, state)
        torchopt.recover_state_dict(inner_opt, opt_state)


def torchopt_adapt(head: EmotionHead, xs: torch.Tensor, ys: torch.Tensor, pos_weight: torch.Tensor, steps: int,
                   lr: float) -> list[Params]:
    import torchopt

    inner = torch.nn.ModuleList(_inner_modules(head))
    inner_opt = torchopt.MetaSGD(inner, lr=lr)
    state = torchopt.extract_state_dict(inner, by="reference", detach_buffers=True)
    opt_state = torchopt.extract_state_dict(inner_opt, by="reference")
    out = []
    for i in range(len(xs)):
        for _ in range(steps):
            inner_opt.step(balanced_bce(head(xs[i]), ys[i], pos_weight))
        out.append({k: v.detach() for k, v in zip(INNER_PARAMS, _inner_tensors(head))})
        torchopt.recover_state_dict(inner, state)
        torchopt.recover_state_dict(inner_opt, opt_state)
    return out


def _torchopt_inner_loop(loss: Callable[[Params, torch.Tensor, torch.Tensor], torch.Tensor], params: Params,
                         x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> Params:
    """torchopt's functional SGD on the adapted tensors (its functional-API MAML example's inner
    loop), differentiable when ``params`` require grad."""
    import torchopt
    from torch.func import grad

    opt = torchopt.sgd(lr=lr)
    inner = {k: params[k] for k in INNER_PARAMS}
    state = opt.init(inner)
    for _ in range(steps):
        updates, state = opt.update(grad(loss)(inner, x, y), state, inplace=False)
        inner = torchopt.apply_updates(inner, updates, inplace=False)
    return inner


def torchopt_functional_meta_backward(head: EmotionHead, batch: EpisodeBatch, pos_weight: torch.Tensor, steps: int,
                                      lr: float) -> None:
    """torchopt's functional API as in its ``examples/FuncTorch/maml_omniglot_vmap.py``: the
    functional ``torchopt.sgd`` with ``apply_updates(inplace=False)``, the inner gradient by
    ``torch.func.grad`` and the meta-batch's tasks run together by ``vmap`` (the example uses
    ``functorch.make_functional_with_buffers``, whose current spelling is
    ``torch.func.functional_call``). The layer weighting is meta-learned, not adapted."""
    from torch.func import functional_call, vmap

    params = dict(head.named_parameters())
    buffers = dict(head.named_buffers())
    fixed = {k: v for k, v in params.items() if k not in INNER_PARAMS}

    def loss(inner: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return balanced_bce(functional_call(head, {**buffers, **fixed, **inner}, (x,)), y, pos_weight)

    def task_loss(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, yq: torch.Tensor) -> torch.Tensor:
        return loss(_torchopt_inner_loop(loss, params, xs, ys, steps, lr), xq, yq)

    vmap(task_loss)(batch.xs, batch.ys, batch.xq, batch.yq).mean().backward()


def torchopt_functional_adapt(head: EmotionHead, xs: torch.Tensor, ys: torch.Tensor, pos_weight: torch.Tensor,
                              steps: int, lr: float) -> list[Params]:
    """The functional inner loop of :func:`torchopt_functional_meta_backward`, vmapped over the
    test listeners, without a meta-gradient."""
    from torch.func import functional_call, vmap

    params = {k: v.detach() for k, v in head.named_parameters()}
    buffers = dict(head.named_buffers())
    fixed = {k: v for k, v in params.items() if k not in INNER_PARAMS}

    def loss(inner: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return balanced_bce(functional_call(head, {**buffers, **fixed, **inner}, (x,)), y, pos_weight)

    def adapt_one(x: torch.Tensor, y: torch.Tensor) -> Params:
        return _torchopt_inner_loop(loss, params, x, y, steps, lr)

    with torch.no_grad():
        adapted = vmap(adapt_one)(xs, ys)
    return [{k: adapted[k][i] for k in INNER_PARAMS} for i in range(len(xs))]


# ----------------------------------------------------------------------------- learn2learn


def _l2l_step(l2l: object, learner: torch.nn.Module, loss: torch.Tensor, lr: float, second_order: bool) -> None:
    """``MAML.adapt`` restricted to the inner parameters: learn2learn's own ``maml_update``
    with no update (``None``) for the layer weighting, as ``MAML(allow_nograd=True)`` does
    for parameters it must not adapt."""
    module = learner.module
    grads = dict(zip(INNER_PARAMS, torch.autograd.grad(loss, _inner_tensors(module), create_graph=second_order)))
    ordered = [grads.get(name) for name, _ in module.named_parameters()]
    l2l.algorithms.maml_update(learner, lr, ordered)  # type: ignore[attr-defined]


def learn2learn_meta_backward(head: EmotionHead, batch: EpisodeBatch, pos_weight: torch.Tensor, steps: int,
                              lr: float) -> None:
    import learn2learn as l2l

    maml = l2l.algorithms.MAML(head, lr=lr)
    n = len(batch.xs)
    for i in range(n):
        learner = maml.clone()
        for _ in range(steps):
            _l2l_step(l2l, learner, balanced_bce(learner(batch.xs[i]), batch.ys[i], pos_weight), lr, True)
        (balanced_bce(learner(batch.xq[i]), batch.yq[i], pos_weight) / n).backward()


def learn2learn_adapt(head: EmotionHead, xs: torch.Tensor, ys: torch.Tensor, pos_weight: torch.Tensor, steps: int,
                      lr: float) -> list[Params]:
    import learn2learn as l2l

    maml = l2l.algorithms.MAML(head, lr=lr, first_order=True)
    out = []
    for i in range(len(xs)):
        learner = maml.clone()
        for _ in range(steps):
            _l2l_step(l2l, learner, balanced_bce(learner(xs[i]), ys[i], pos_weight), lr, False)
        out.append({k: v.detach() for k, v in zip(INNER_PARAMS, _inner_tensors(learner.module))})
    return out


# ---------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Library:
    """One library column: its import name (for the availability check) and its two workloads."""

    name: str
    module: str
    meta_backward: MetaBackward
    adapt: Adapt
    install: str

    def available(self) -> str | None:
        """``None`` when importable, else why not (shown as the skipped column's reason)."""
        try:
            importlib.import_module(self.module)
        except Exception as exc:  # noqa: BLE001 - ImportError or a broken install of its dependencies
            return f"not importable ({type(exc).__name__}: {exc}); {self.install}"
        return None


LIBRARIES = (
    Library("higher", "higher", higher_meta_backward, higher_adapt, "pip install 'perserbench[bench]'"),
    Library("torchopt", "torchopt", torchopt_meta_backward, torchopt_adapt, "pip install 'perserbench[bench]'"),
    Library("torchopt (functional)", "torchopt", torchopt_functional_meta_backward, torchopt_functional_adapt,
            "pip install 'perserbench[bench]'"),
    Library("learn2learn", "learn2learn", learn2learn_meta_backward, learn2learn_adapt,
            "build it with benchmarks/install_learn2learn.sh (its PyPI sdist does not compile on Python 3.11+)"),
)

__all__ = ["LIBRARIES", "Library"]
