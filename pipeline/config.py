"""Pipeline configuration: one pydantic model per section, validated when the file is loaded.

``load_config(path)`` is the single entry point. Every problem is reported with the file, the line where the
offending key sits and the dotted field path, e.g. ``cams.yaml:12 cameras.1.detect_fps: Input should be greater
than 0``; unknown keys are rejected (with a close match suggested) instead of being ignored.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from detectors.appearance import AppearanceConfig
from detectors.ground import GroundGate
from pipeline.service.config import HttpConfig, parse_listen
from reid.identity.config import GalleryConfig, MatcherConfig
from reid.identity.geometry import CalibrationError, GeometryConfig, Homography
from reid.paths import DEFAULT_WEIGHTS, PROJECT_ROOT, shared_root

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

_ID = r"^[A-Za-z0-9_\-]{1,64}$"
_DEVICE = r"^(cpu|cuda(:[0-9]+)?)$"


def is_live_source(source: object) -> bool:
    """A USB camera index or a network stream URL: a source that is not a file path."""
    return isinstance(source, int) or (isinstance(source, str)
                                       and bool(re.match(r"^(rtsp|rtsps|http|https|udp|tcp)://", source)))


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file, line and field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CameraConfig(_Section):
    """One camera: where its frames come from and how often they are analysed."""

    id: str = Field(pattern=_ID, description="camera id used in events, track keys and file names")
    source: str | int = Field(
        description="video file, image folder, rtsp:// or http(s):// URL, or USB camera index (integer)"
    )
    detect_fps: float | None = Field(
        5.0, gt=0, description="frames per second sent to the detector (every n-th frame of the source)"
    )
    frame_stride: int | None = Field(None, ge=1, description="analyse every n-th frame; overrides detect_fps")
    start_offset_s: float = Field(
        0.0, description="added to this camera's video time, to align recordings that did not start together"
    )
    roi: tuple[int, int, int, int] | None = Field(
        None, description="region of interest x1, y1, x2, y2 in pixels; detections outside it are ignored"
    )
    fps: float | None = Field(None, gt=0, description="frame rate to assume when the source does not report one")
    read_timeout_s: float = Field(
        5.0, gt=0, description="live only: a stream that delivers no frame for this long is stalled: it is closed "
        "and reopened"
    )
    reconnect_backoff_s: tuple[float, float] = Field(
        (0.5, 30.0), description="live only: first and longest wait between reconnection attempts (doubling)"
    )
    homography: list[list[float]] | str | None = Field(
        None, description="image-to-ground calibration: a 3x3 matrix (rows) or the path of a text file holding one; "
        "all calibrated cameras must map to one shared ground frame (free units, see the geometry section)"
    )
    ground_offset: tuple[FiniteFloat, FiniteFloat] | None = Field(
        None, description="added to this camera's ground positions (x, y, in the ground frame's units) to move its "
        "floor onto the first calibrated camera's: minus the constant shift `python -m pipeline.site_check` measures "
        "when two calibrated views put one person at places a fixed distance apart (needs a homography)"
    )

    @field_validator("reconnect_backoff_s")
    @classmethod
    def _backoff(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError("reconnect_backoff_s must be first, longest with 0 < first <= longest")
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: str | int) -> str | int:
        if isinstance(v, int):
            if v < 0:
                raise ValueError("a USB camera index must be >= 0")
            return v
        if not v.strip():
            raise ValueError("source must not be empty")
        return v

    @field_validator("roi")
    @classmethod
    def _roi(cls, v: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        if v is not None and not (0 <= v[0] < v[2] and 0 <= v[1] < v[3]):
            raise ValueError("roi must be x1, y1, x2, y2 with 0 <= x1 < x2 and 0 <= y1 < y2")
        return v

    @property
    def is_live(self) -> bool:
        """A stream that cannot be replayed (network or USB camera)."""
        return is_live_source(self.source)

    @field_validator("homography")
    @classmethod
    def _homography(cls, v: list[list[float]] | str | None) -> list[list[float]] | str | None:
        if isinstance(v, list):
            Homography(v)  # shape, finiteness, singularity: a CalibrationError (a ValueError) names the problem
        return v

    @model_validator(mode="after")
    def _offset(self) -> CameraConfig:
        if self.ground_offset is not None and self.homography is None:
            raise ValueError("ground_offset corrects a homography: this camera has none")
        return self

    def ground(self) -> Homography | None:
        """The checked homography (``load_config`` reads a file into its matrix), followed by the camera's
        ``ground_offset``: every consumer of ground positions (tracker gate, identity stage, gap filling, floor plan,
        adaptation) sees the corrected ones."""
        if self.homography is None:
            return None
        h = Homography.load(self.homography)
        return h if self.ground_offset is None else h.translated(*self.ground_offset)


class DetectorConfig(_Section):
    """YOLO person detector and per-camera tracker."""

    weights: Path = Field(
        default_factory=lambda: shared_root() / "weights" / "yolo11n_int8_320.onnx",
        description="ultralytics-loadable weights (.pt, .onnx, .engine, OpenVINO folder)",
    )
    imgsz: int = Field(640, ge=32, description="input size (fixed-size ONNX files run at their own size)")
    conf: float = Field(0.35, gt=0, lt=1, description="minimum detection confidence")
    iou: float = Field(0.45, gt=0, lt=1, description="NMS IoU threshold")
    device: str = Field("cpu", pattern=_DEVICE, description="cpu, cuda or cuda:N")
    tracker: Literal["bytetrack", "botsort"] = Field("bytetrack", description="per-camera tracker")
    lost_timeout_s: float = Field(1.5, gt=0, description="a track not seen for this long ends")
    crop_pad_frac: float = Field(0.0, ge=0, le=0.5, description="context padding around each crop, share of its size")
    min_crop_height_px: int = Field(48, ge=8, description="crops lower than this are too small to embed")
    max_crops_per_track: int = Field(4, ge=1, le=16, description="best crops of a track sent for embedding; the "
                                     "matcher averages them all (weighted by quality) into the track's embedding")
    appearance: AppearanceConfig = Field(
        default_factory=AppearanceConfig, description="HA-CNN appearance in the per-camera association, so tracks "
        "survive crossings (detectors/appearance.py); the detect stage then embeds the detections it can decide"
    )
    ground_gate: bool = Field(True, description="on calibrated cameras, the tracker refuses a match that would move "
                              "a person faster than geometry.max_speed on the ground (detectors/ground.py); turn off "
                              "for a rough calibration")

    @model_validator(mode="after")
    def _appearance_tracker(self) -> DetectorConfig:
        if self.appearance.enabled and self.tracker != "bytetrack":
            raise ValueError(f"appearance.enabled needs tracker: bytetrack (BoT-SORT fuses appearance its own way); "
                             f"set appearance: {{enabled: false}} to use {self.tracker}")
        return self


class ReidConfig(_Section):
    """HA-CNN embedding stage."""

    weights: Path = Field(DEFAULT_WEIGHTS, description="HA-CNN weights file (reid.weights format)")
    backend: Literal["auto", "tensorrt", "onnxruntime", "torch"] = Field("auto", description="inference backend")
    precision: Literal["fp32", "fp16", "int8"] = Field("fp32", description="inference precision")
    int8_onnx: Path | None = Field(None, description="Q/DQ model from trt_engines.quantize (int8 only)")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:0)?)$", description="auto, cpu or cuda (the first GPU: "
                        "the TensorRT engines are built for one device)")
    batch_size: int = Field(32, ge=1, le=1024, description="largest batch the embedder runs at once")
    max_wait_ms: float = Field(50.0, ge=0, description="longest wait to fill a batch before running a partial one")

    @model_validator(mode="after")
    def _combination(self) -> ReidConfig:
        """Combinations no backend can run, caught at load time rather than inside a started stage."""
        problems = {
            "backend tensorrt needs a GPU: device cpu is impossible":
                self.backend == "tensorrt" and self.device == "cpu",
            "backend torch runs fp32 or fp16, not int8 (int8: onnxruntime or tensorrt with int8_onnx)":
                self.backend == "torch" and self.precision == "int8",
            "backend onnxruntime runs fp32 or int8, not fp16 (fp16: tensorrt or torch on a GPU)":
                self.backend == "onnxruntime" and self.precision == "fp16",
            "precision int8 needs int8_onnx, the Q/DQ model of python -m trt_engines.quantize":
                self.precision == "int8" and self.int8_onnx is None,
            f"int8_onnx is used only with precision int8 (precision is {self.precision})":
                self.int8_onnx is not None and self.precision != "int8",
        }
        found = [msg for msg, bad in problems.items() if bad]
        if found:
            raise ValueError("; ".join(found))
        return self

    def build_embedder(self, max_batch: int | None = None):  # noqa: ANN201 - a trt_engines.embedder.Embedder
        """The embedder these settings describe (the embed stage's; a search's with ``max_batch=1``)."""
        from trt_engines.embedder import build_embedder

        return build_embedder(self.backend, self.precision, self.weights, device=self.device,
                              max_batch=max_batch or self.batch_size, int8_onnx_path=self.int8_onnx)


class CurveConfig(_Section):
    """CURVE authentication and encryption of the identity-event socket and of every tcp stage endpoint (keys from
    ``python -m pipeline.keys``; ipc endpoints are files guarded by the run directory's permissions)."""

    server_secret_key: Path = Field(description="the event publisher's secret key file (server.key_secret)")
    authorized_keys_dir: Path = Field(description="folder of the public keys of the subscribers allowed in")
    client_secret_key: Path = Field(description="the supervisor's own subscriber key (pipeline.key_secret); its "
                                    "public key must be in authorized_keys_dir")

    @model_validator(mode="after")
    def _files(self) -> CurveConfig:
        for name in ("server_secret_key", "client_secret_key"):
            if not getattr(self, name).is_file():
                raise ValueError(f"{name}: {getattr(self, name)} not found (python -m pipeline.keys DIR)")
        if not self.authorized_keys_dir.is_dir():
            raise ValueError(f"authorized_keys_dir: {self.authorized_keys_dir} is not a folder")
        return self


class EndpointsConfig(_Section):
    """ZeroMQ endpoints. Local stages talk over ipc:// sockets in the run directory unless set here."""

    detect: str | None = Field(None, description="input of the detect stage (default ipc://RUN/detect.sock)")
    embed: str | None = Field(None, description="input of the embed stage (default ipc://RUN/embed.sock)")
    match: str | None = Field(None, description="input of the match stage (default ipc://RUN/match.sock)")
    control: str | None = Field(None, description="stage -> supervisor reports (default ipc://RUN/control.sock)")
    events: str = Field("tcp://127.0.0.1:5560", description="PUB socket of the identity events (localhost only "
                        "unless set otherwise)")
    curve: CurveConfig | None = Field(None, description="require CURVE keys on the event socket and tcp stage "
                                     "endpoints (off: open)")
    high_water_mark: int = Field(8, ge=1, description="messages queued per socket before senders block (replay) "
                                 "or the detector skips to the newest frames (live)")
    stall_timeout_s: float = Field(
        120.0, gt=0, description="a stage whose upstream stage has finished, that has received nothing for this "
        "long and still waits for an end of stream, is reported and the run ends with an error naming it"
    )

    @field_validator("detect", "embed", "match", "control", "events")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^(ipc|tcp|inproc)://.+", v):
            raise ValueError(f"{v!r} is not a ZeroMQ endpoint (ipc://path, tcp://host:port)")
        return v


class PipelineConfig(_Section):
    """The whole pipeline: cameras, optional topology, and the stages."""

    name: str = Field("default", pattern=_ID, description="run name; the run directory is runs/<name> by default")
    run_dir: Path | None = Field(None, description="sockets, embedded Redis data, logs, videos (default runs/<name>)")
    cameras: list[CameraConfig] = Field(min_length=1, description="the cameras")
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    reid: ReidConfig = Field(default_factory=ReidConfig)
    matcher: MatcherConfig = Field(default_factory=MatcherConfig, description="cross-camera matcher and its Redis")
    endpoints: EndpointsConfig = Field(default_factory=EndpointsConfig)
    events_include_crops: bool = Field(False, description="identity.new/identity.moved events carry a small base64 "
                                       "JPEG of the track's best crop, crop_jpeg (off: no image data)")
    geometry: GeometryConfig | None = Field(
        None, description="ground-plane rules for calibrated cameras (required when a camera has a homography)"
    )
    gallery: GalleryConfig = Field(default_factory=GalleryConfig, description="each identity's timeline and "
                                   "thumbnails, kept in Redis for search and the web page")
    http: HttpConfig | None = Field(None, description="the HTTP API, metrics and web page (off unless set, or "
                                    "run_pipeline.py --http HOST:PORT)")

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "match" in data:
            raise ValueError("the match section is gone: its min_age_s, ambiguous_wait_s, max_lateness_s and "
                             "continuity are now in the matcher section (min_crops and mature_after_s are dropped)")
        return data

    @model_validator(mode="after")
    def _unique_ids(self) -> PipelineConfig:
        ids = [c.id for c in self.cameras]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"camera ids must be unique, repeated: {dupes}")
        calibrated = [c.id for c in self.cameras if c.homography is not None]
        if calibrated and self.geometry is None:
            raise ValueError(f"cameras {calibrated} have a homography: add a geometry section with same_place, "
                             "different_place and max_speed in its units (docs/geometry.md)")
        topo = self.matcher.topology
        if topo:
            unknown = {c for link in topo.links for c in (link.from_camera, link.to_camera)} - set(ids)
            if unknown:
                raise ValueError(f"matcher.topology names unknown cameras {sorted(unknown)}")
        return self

    @property
    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir else PROJECT_ROOT / "runs" / self.name

    def ground_gate(self, camera_id: str) -> GroundGate | None:
        """The ground-plane gate of a camera's tracker (``detectors.ground``): None without calibration or with
        ``detector.ground_gate`` off."""
        cam = next(c for c in self.cameras if c.id == camera_id)
        h = cam.ground()
        if h is None or self.geometry is None or not self.detector.ground_gate:
            return None
        return GroundGate(h, self.geometry.different_place, self.geometry.max_speed)

    def with_run_dir(self, run_dir: Path) -> PipelineConfig:
        """The same config running in another directory (sockets and embedded Redis data move with it)."""
        redis = self.matcher.redis
        if redis.embedded_dir == self.resolved_run_dir / "redis":
            redis = redis.model_copy(update={"embedded_dir": run_dir / "redis"})
        return self.model_copy(update={"run_dir": run_dir,
                                       "matcher": self.matcher.model_copy(update={"redis": redis})})

    def checks_swaps(self, camera_id: str) -> bool:
        """Does the identity stage look for swaps in this camera's tracks (``reid.identity.swaps``): it is calibrated,
        another camera is too, and the ground checks are on (``matcher.audit_every_s``)?"""
        calibrated = {c.id for c in self.cameras if c.homography is not None}
        return camera_id in calibrated and len(calibrated) >= 2 and self.matcher.audit_every_s > 0 \
            and self.geometry is not None

    def with_detect_fps(self, fps: float) -> PipelineConfig:
        """The config with every camera detecting ``fps`` times a second (a ``frame_stride``, which would override
        the rate, is dropped): how a benchmark or a test runs the same cameras at another detection rate."""
        return self.model_copy(update={"cameras": [c.model_copy(update={"detect_fps": fps, "frame_stride": None})
                                                   for c in self.cameras]})

    def with_http(self, listen: str) -> PipelineConfig:
        """The config with the HTTP service on ``HOST:PORT`` (``--http``; the config's other http settings kept),
        checked again: a non-loopback address needs a token."""
        try:
            host, port = parse_listen(listen)
            base = self.http.model_dump() if self.http else {}
            http = HttpConfig.model_validate({**base, "host": host, "port": port})
        except ValidationError as e:
            raise ConfigError(f"--http {listen}: " + "; ".join(err["msg"] for err in e.errors())) from None
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return self.model_copy(update={"http": http})

    def endpoint(self, name: str) -> str:
        """The endpoint of ``name`` (detect, embed, match, control, events)."""
        value = getattr(self.endpoints, name)
        return value or f"ipc://{self.resolved_run_dir / (name + '.sock')}"


# ---------------------------------------------------------------------------------------------------------
# Loading with precise error messages
# ---------------------------------------------------------------------------------------------------------


class _LineLoader(yaml.SafeLoader):
    """Records the line of every mapping key, so validation errors can point into the file."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:  # YAML lets the last one win silently: a pasted section would drop the first's keys
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {loader.key_lines[(id(mapping), key)]}): merge "
                "the two", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=deep)
        loader.key_lines[(id(mapping), key)] = key_node.start_mark.line + 1
    loader.node_lines[id(mapping)] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_of(data: Any, loc: tuple, key_lines: dict, node_lines: dict) -> int | None:
    line, node = node_lines.get(id(data)), data
    for part in loc:
        if isinstance(node, dict) and part in node:
            line = key_lines.get((id(node), part), line)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            line = node_lines.get(id(node), line)
        else:
            break
    return line


def _known_fields(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names valid at ``loc`` (for 'did you mean' hints)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        for cand in getattr(ann, "__args__", ()) + (ann,):
            inner = getattr(cand, "__args__", ())
            for c in (cand, *inner):
                if isinstance(c, type) and issubclass(c, BaseModel):
                    model = c
                    break
    return list(model.model_fields)


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline YAML file; raise :class:`ConfigError` naming file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from e
    loader = _LineLoader(text)
    loader.key_lines, loader.node_lines = {}, {}
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: malformed YAML: {getattr(e, 'problem', e)}") from e
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    _resolve_paths(data, path, loader)
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = tuple(err["loc"])
            dotted = ".".join(str(p) for p in loc) or "(top level)"
            line = _line_of(data, loc, loader.key_lines, loader.node_lines)
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                close = difflib.get_close_matches(str(loc[-1]), _known_fields(PipelineConfig, loc[:-1]), n=1)
                msg = "unknown field" + (f" (did you mean {close[0]!r}?)" if close else "")
            lines.append(f"{path}{f':{line}' if line else ''} {dotted}: {msg}")
        raise ConfigError("\n".join(lines)) from None
    return cfg


def _abs(p: str | Path, base: Path) -> str:
    p = Path(p).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _section(data: dict, *keys: str) -> dict:
    """``data[k1][k2]...`` when every level is a mapping, else an empty dict (validation reports the rest)."""
    for k in keys:
        data = data.get(k) if isinstance(data, dict) else None  # type: ignore[assignment]
    return data if isinstance(data, dict) else {}


def _resolve_paths(data: dict, path: Path, loader: _LineLoader) -> None:
    """The one place config paths are resolved, in the raw mapping before validation (so the validators check the
    files themselves): every path written in the file is relative to the file; homography files are read into
    their matrices; the run directory defaults to ``runs/<name>`` in the project and the embedded Redis keeps its
    data in the run directory unless the file says otherwise."""
    base = path.resolve().parent
    name = data.get("name", "default")
    data["run_dir"] = _abs(data["run_dir"], base) if isinstance(data.get("run_dir"), str) else (
        data.get("run_dir") or str(PROJECT_ROOT / "runs" / str(name)))
    for keys, fields in ((("detector",), ("weights",)), (("detector", "appearance"), ("weights",)),
                         (("reid",), ("weights", "int8_onnx")),
                         (("matcher", "redis"), ("embedded_dir", "embedded_binary", "tls_ca_file", "tls_cert_file",
                                                 "tls_key_file")),
                         (("endpoints", "curve"), ("server_secret_key", "authorized_keys_dir", "client_secret_key"))):
        section = _section(data, *keys)
        for f in fields:
            if isinstance(section.get(f), str):
                section[f] = _abs(section[f], base)
    matcher = data.setdefault("matcher", {})
    redis = matcher.setdefault("redis", {}) if isinstance(matcher, dict) else None
    if isinstance(redis, dict) and isinstance(data["run_dir"], str):  # anything else: validation says what is wrong
        redis.setdefault("embedded_dir", str(Path(data["run_dir"]) / "redis"))
    cameras = data.get("cameras") if isinstance(data.get("cameras"), list) else []
    for i, cam in enumerate(cameras):
        if not isinstance(cam, dict):
            continue
        if isinstance(cam.get("source"), str) and cam["source"].strip() and not is_live_source(cam["source"]):
            cam["source"] = _abs(cam["source"], base)
        if isinstance(cam.get("homography"), str):
            try:
                cam["homography"] = Homography.load(cam["homography"], base).matrix.tolist()
            except CalibrationError as e:
                line = _line_of(data, ("cameras", i, "homography"), loader.key_lines, loader.node_lines)
                raise ConfigError(f"{path}{f':{line}' if line else ''} cameras.{i}.homography: {e}") from None
