"""Fixtures of the identity tests: a private Redis server (see tests/redis_server.py)."""

from tests.redis_server import redis_server, redis_url  # noqa: F401 - fixtures used by test_matcher, test_store
