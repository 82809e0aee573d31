"""The ``http:`` section: where the service listens and who may use it.

Why a token rule here: the API shows pictures of people. On 127.0.0.1 (the default) only this machine reaches
it; bound to any other address it must require a bearer token, given in the config or (better) in an
environment variable, or the config is refused before anything starts.
"""

from __future__ import annotations

import ipaddress
import os

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpConfig(BaseModel):
    """The HTTP service (off unless this section or ``--http`` is given)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", min_length=1, description="address to bind; anything but loopback needs a token")
    port: int = Field(8080, ge=0, le=65535, description="TCP port (0: a free one, logged at start)")
    token: SecretStr | None = Field(None, description="bearer token every request must carry (Authorization: Bearer)")
    token_env: str | None = Field(None, description="name of an environment variable holding the token")
    max_upload_bytes: int = Field(5 * 1024 * 1024, ge=1024, description="largest photo POST /api/search accepts")
    snapshot_every_s: float = Field(1.0, gt=0, description="the detect stage writes each camera's latest annotated "
                                    "frame (a small JPEG) this often, for GET /api/cameras/{id}/snapshot.jpg")
    page_size_max: int = Field(500, ge=1, description="most identities one GET /api/identities page returns")

    @model_validator(mode="after")
    def _token_off_loopback(self) -> HttpConfig:
        if self.token is not None and self.token_env:
            raise ValueError("set token or token_env, not both")
        if not is_loopback(self.host) and self.resolved_token() is None:
            raise ValueError(f"host {self.host} is reachable from other machines: set token or token_env (a bearer "
                             "token), or bind 127.0.0.1")
        return self

    def resolved_token(self) -> str | None:
        if self.token is not None:
            return self.token.get_secret_value() or None
        if self.token_env:
            return os.environ.get(self.token_env) or None
        return None


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``PORT``) of ``--http``; raises ValueError with what is wrong."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--http {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)
