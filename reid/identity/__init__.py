"""The identity half of re-ID: per-camera tracks in, global identities out, kept in Redis.

It needs numpy, scipy, pydantic and the Redis client, never torch: the match stage, the config validator and
the matcher's tests import it without loading a model. ``reid``'s model modules (model, data, train, ...) do not
import it either; ``reid.link_bench`` is the one module that uses both halves. tests/reid/test_layout.py keeps
it that way.

Modules, one job each: ``config`` (settings), ``records`` (what an identity is, and its Redis encoding),
``rules`` (who may be whom, and the assignment), ``gallery`` (prototype search), ``matcher`` (the matcher),
``store`` (Redis and in-memory stores), ``redis_server`` (a private Redis), ``link_metrics`` (IDF1 and link
scores).
"""
