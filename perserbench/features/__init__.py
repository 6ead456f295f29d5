"""Features: audio input (:mod:`.audio`), upstream encoders (:mod:`.upstreams`) and the
on-disk feature cache (:mod:`.cache`) that tasks read through :func:`load_cached_features`.

Nothing heavy is imported here, so ``import perserbench.features`` stays cheap; torch and
transformers are loaded only by the modules that need them.
"""

from __future__ import annotations

__all__ = ["audio", "cache", "upstreams"]
