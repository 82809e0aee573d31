"""Trained-weights files: the embedding network's parameters plus a model card, loadable with one call.

A weights file is a ``torch.save`` dict ``{"format", "config", "state_dict", "card"}``. The classifiers are
dropped (they only serve training and would double the size), parameters may be stored in float16, and the
card records what the weights are: architecture config, data, recipe, epochs and metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reid.model import HACNN, build_model

log = logging.getLogger(__name__)

FORMAT = "hacnn-reid-weights/1"


class WeightsError(ValueError):
    """A weights file that is missing, corrupt or of another format; the message names the file."""


def embedding_state(model: nn.Module, half: bool) -> dict[str, torch.Tensor]:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith("classifier_")}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    return state


def save_weights(model: HACNN, path: str | Path, card: dict[str, Any], half: bool = True) -> Path:
    """Write the embedding weights with ``card``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "config": dict(model.config), "state_dict": embedding_state(model, half), "card": card}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def read_weights(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"{path}: weights file not found (train one with `python -m reid.train` or pass --weights)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise WeightsError(f"{path}: not a readable weights file ({e})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise WeightsError(f"{path}: not an HA-CNN weights file (expected format {FORMAT!r})")
    return payload


def load_model(path: str | Path, device: str | torch.device = "cpu") -> HACNN:
    """Build HA-CNN from a weights file, in eval mode and float32, on ``device``."""
    payload = read_weights(path)
    model = build_model("hacnn", **payload["config"])
    missing, unexpected = model.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}, strict=False
    )
    missing = [k for k in missing if not k.startswith("classifier_")]
    if missing or unexpected:
        raise WeightsError(f"{path}: weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.card = payload.get("card", {})
    return model.to(device).eval()
