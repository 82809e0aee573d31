"""Export trained HA-CNN weights to ONNX (opset 17, dynamic batch) for ONNX Runtime and TensorRT.

    python -m trt_engines.export [--weights W] --out model.onnx [--opset 17]

The graph takes ``images``: float32 (N, 3, 160, 64) RGB in [0, 1] (see ``reid.transforms.preprocess_bgr``;
normalisation is inside the graph) and returns ``embeddings``: float32 (N, 1024). The TorchScript-based
exporter is used on purpose: the torch.export-based one emits opset 18 and fails to convert down to 17.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import torch

from reid.log import setup_logging
from reid.model import HACNN, INPUT_HEIGHT, INPUT_WIDTH
from reid.paths import DEFAULT_WEIGHTS
from reid.weights import WeightsError, load_model
from trt_engines.trt_ops import unsupported_ops

log = logging.getLogger("trt_engines.export")

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"


class ExportError(RuntimeError):
    """The export failed or produced a graph that TensorRT could not import."""


def export_onnx(model: HACNN, path: str | Path, opset: int = 17) -> Path:
    """Write ``model`` (eval mode) to ``path`` and check the graph: valid ONNX, TensorRT-importable ops."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    if any(m.training for m in model.modules()):
        raise ExportError("every module must be in eval mode for export")
    dummy = torch.rand(2, 3, INPUT_HEIGHT, INPUT_WIDTH)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about constant shapes, which are constant here
        torch.onnx.export(
            model, (dummy,), str(path), opset_version=opset, dynamo=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    bad = unsupported_ops(graph)
    if bad:
        raise ExportError(f"{path}: ops TensorRT cannot import: {bad}")
    card = getattr(model, "card", None)
    meta = {"opset": str(opset), "input": f"{INPUT_NAME} float32 [N,3,{INPUT_HEIGHT},{INPUT_WIDTH}] RGB 0..1",
            "output": f"{OUTPUT_NAME} float32 [N,{model.embedding_dim}]"}
    if card:
        meta["card"] = json.dumps({k: card[k] for k in ("architecture", "epochs", "metrics") if k in card})
    for k, v in meta.items():
        graph.metadata_props.add(key=k, value=v)
    onnx.save(graph, str(path))
    log.info("exported %s (opset %d, %.1f MB) in %.1f s; input %s, output %s", path, opset,
             path.stat().st_size / 1e6, time.perf_counter() - t0, meta["input"], meta["output"])
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trt_engines.export", description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--opset", type=int, default=17, choices=[17])
    args = p.parse_args(argv)
    setup_logging(logging.INFO)
    try:
        export_onnx(load_model(args.weights), args.out, args.opset)
    except (WeightsError, ExportError) as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
