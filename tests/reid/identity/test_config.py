"""The identity config sections reject what cannot work, with a message that says why."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reid.identity.config import MatcherConfig, RedisConfig, TopologyConfig


def test_topology_config_is_validated():
    with pytest.raises(ValidationError, match="max_travel_s 3.0 < min_travel_s 5.0"):
        TopologyConfig.model_validate({"links": [{"from_camera": "a", "to_camera": "b", "min_travel_s": 5,
                                                  "max_travel_s": 3}]})
    with pytest.raises(ValidationError, match="extra_forbidden"):
        MatcherConfig.model_validate({"threshold": 0.5, "treshold_typo": 1})
    with pytest.raises(ValidationError, match="rediss"):
        RedisConfig(url="redis://x:6379", tls_ca_file="ca.pem")
    with pytest.raises(ValidationError, match="need"):
        RedisConfig(username="reid")
    assert "description" in MatcherConfig.model_json_schema()["properties"]["expiry_s"]
