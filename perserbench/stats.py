"""Statistics over per-listener results.

Listeners are the unit of personalization, so every interval and test treats the listener as
the independent sample; episodes are repeated measurements within a listener. Everything a
library provides (tests, distributions) comes from ``scipy.stats``; the hierarchical
bootstrap is written here because scipy's ``bootstrap`` resamples one level only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def hierarchical_bootstrap(
    per_listener: Sequence[np.ndarray],
    n_resamples: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """Bootstrap distribution of the mean over listeners of per-listener mean scores.

    Two-level resampling: draw listeners with replacement, then, within each drawn listener,
    draw that listener's episode scores with replacement. ``per_listener[i]`` holds listener
    ``i``'s episode scores (any length >= 1). Returns ``n_resamples`` resampled means.
    Deterministic for a given ``seed``.
    """
    groups = [np.asarray(g, dtype=float) for g in per_listener]
    if not groups or any(g.size == 0 for g in groups):
        raise ValueError("hierarchical_bootstrap needs at least one listener, each with >= 1 score")
    rng = np.random.default_rng(seed)
    n = len(groups)
    sizes = np.array([g.size for g in groups])
    width = int(sizes.max())
    # Pad to a rectangle so the episode level is one vectorised draw per listener slot.
    table = np.zeros((n, width))
    for i, g in enumerate(groups):
        table[i, : g.size] = g
    picks = rng.integers(0, n, size=(n_resamples, n))  # listener level
    slot_sizes = sizes[picks]  # [B, n]
    episode_idx = (rng.random((n_resamples, n, width)) * slot_sizes[..., None]).astype(np.int64)
    valid = np.arange(width)[None, None, :] < slot_sizes[..., None]
    values = table[picks[..., None], episode_idx]  # [B, n, width]
    listener_means = np.where(valid, values, 0.0).sum(-1) / slot_sizes
    return listener_means.mean(axis=1)


def hierarchical_bootstrap_ci(
    per_listener: Sequence[np.ndarray],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean of listener means, CI low, CI high) with a percentile hierarchical-bootstrap CI."""
    means = np.array([np.mean(g) for g in per_listener], dtype=float)
    point = float(means.mean())
    if len(means) == 1 and np.asarray(per_listener[0]).size == 1:
        return point, point, point
    dist = hierarchical_bootstrap(per_listener, n_resamples=n_resamples, seed=seed)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(dist, [alpha, 1.0 - alpha])
    return point, float(low), float(high)
