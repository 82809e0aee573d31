"""INT8 HA-CNN for CPU and GPU from one artefact: a Q/DQ ONNX model made with ONNX Runtime static
quantisation (symmetric int8, zero points 0, per-channel weights), calibrated on real person crops.

    python -m trt_engines.quantize --calib DIR --out model.int8.onnx [--onnx model.onnx | --weights W]
        [--num-images 512] [--method minmax|entropy|percentile]

ONNX Runtime runs it on the CPU; TensorRT builds its INT8 engine from the same Q/DQ nodes (zero points of 0
are what TensorRT's explicit quantisation requires). ``--calib`` is a Market-layout dataset (its
``bounding_box_train`` split) or any folder of crop images.

Measured on cuhk03_p1 (ONNX Runtime, CPU, MinMax, 512 calibration crops): with the shipped weights float32
Rank-1 68.07 / mAP 66.95, int8 67.63 / 66.74 (0.21 mAP lost, inside the 1-point gate). The first weights
lost 1.1 to 1.4 points (64.66 -> 63.55 MinMax, 63.41 Percentile, 63.24 convolutions only): symmetric activations,
which TensorRT requires, leave post-ReLU tensors only 7 bits, so how much int8 costs depends on the weights;
``--evaluate`` re-checks every new model against the gate. On an AVX2 CPU without VNNI int8 is slower than
float32, so the CPU default stays float32.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from reid.data import Sample, load_images
from reid.log import setup_logging
from reid.paths import DEFAULT_WEIGHTS, IMAGE_SUFFIXES
from trt_engines.cache import cached_onnx, file_hash

log = logging.getLogger("trt_engines.quantize")

SOURCE_ONNX_KEY = "hacnn.source_onnx_sha256"  # the float32 model it was quantised from
WEIGHTS_KEY = "hacnn.weights_sha256"  # the weights file that model was exported from (--weights)
GATE_KEY = "hacnn.gate"  # the --evaluate result it passed


def calibration_images(folder: Path, num_images: int, seed: int = 0) -> np.ndarray:
    """float32 (N, 3, 160, 64) network inputs from a random sample of the crops under ``folder``."""
    root = folder / "bounding_box_train" if (folder / "bounding_box_train").is_dir() else folder
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{root}: no calibration images ({', '.join(IMAGE_SUFFIXES)})")
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(files), min(num_images, len(files)), replace=False))
    imgs = load_images([Sample(files[i], 0, 1) for i in pick])
    return imgs.numpy().astype(np.float32) / 255.0


def quantize(onnx_path: Path, out: Path, calib: np.ndarray, method: str = "minmax", batch: int = 32) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([calib[i : i + batch] for i in range(0, len(calib), batch)])

        def get_next(self):
            x = next(self.batches, None)
            return None if x is None else {"images": x}

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(onnx_path), str(prepped), skip_symbolic_shape=True)
        quantize_static(
            str(prepped), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=methods[method],
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
    stamp(out, {SOURCE_ONNX_KEY: file_hash(onnx_path, None)})
    return out


def stamp(model_path: Path, fields: dict[str, str]) -> None:
    """Record ``fields`` in the ONNX model's metadata (what it was made from, whether it passed the gate)."""
    import onnx

    model = onnx.load(str(model_path))
    kept = [p for p in model.metadata_props if p.key not in fields]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in fields.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(model_path))


def provenance(model_path: Path) -> dict[str, str]:
    """The ``hacnn.*`` metadata of a quantised model (empty for one made before it was recorded)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props if p.key.startswith("hacnn.")}


def check_int8(int8_path: Path, weights: Path) -> None:
    """Refuse an int8 model quantised from other weights than ``weights`` (an adapted model needs its own, checked
    again against the gate); warn when its origin or its gate check is not recorded."""
    from trt_engines.embedder import BackendUnavailableError

    meta = provenance(int8_path)
    recorded = meta.get(WEIGHTS_KEY)
    fix = (f"python -m trt_engines.quantize --weights {weights} --calib DIR --evaluate DATASET --out "
           f"{int8_path.name}")
    if recorded is None:
        log.warning("%s does not record the weights it was quantised from; if they are not %s, run %s", int8_path,
                    weights, fix)
    elif recorded != file_hash(weights, None):
        raise BackendUnavailableError(f"{int8_path} was quantised from other weights than {weights} (reid.weights); "
                                      f"quantise and check these: {fix}")
    if GATE_KEY not in meta:
        log.warning("%s was not checked against the int8 accuracy gate (quantize --evaluate)", int8_path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trt_engines.quantize", description=__doc__.split("\n")[0])
    p.add_argument("--calib", type=Path, required=True, help="Market-layout dataset or folder of crops")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--onnx", type=Path, default=None, help="float32 ONNX model (default: export --weights)")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--num-images", type=int, default=512)
    p.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="minmax")
    p.add_argument("--evaluate", type=Path, default=None,
                   help="Market-layout dataset: report float32 vs int8 mAP (ONNX Runtime) and fail if int8 "
                        "loses more than --max-map-drop points")
    p.add_argument("--max-map-drop", type=float, default=1.0)
    args = p.parse_args(argv)
    setup_logging(logging.INFO)
    t0 = time.perf_counter()
    try:
        onnx_path = args.onnx or cached_onnx(args.weights)
        calib = calibration_images(args.calib, args.num_images)
    except (FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        return 2
    quantize(onnx_path, args.out, calib, args.method)
    if args.onnx is None:
        stamp(args.out, {WEIGHTS_KEY: file_hash(args.weights, None)})
    log.info("wrote %s from %d calibration crops in %.0f s", args.out, len(calib), time.perf_counter() - t0)
    if args.evaluate:
        from trt_engines.accuracy import evaluate_embedder, load_evalset
        from trt_engines.ort_backend import OnnxRuntimeEmbedder

        data = load_evalset(args.evaluate)
        fp32 = evaluate_embedder(OnnxRuntimeEmbedder(onnx_path, "fp32"), data).as_percent()
        int8 = evaluate_embedder(OnnxRuntimeEmbedder(args.out, "int8"), data).as_percent()
        drop = fp32["mAP"] - int8["mAP"]
        print(f"float32: Rank-1 {fp32['rank1']:.2f} mAP {fp32['mAP']:.2f}   "
              f"int8: Rank-1 {int8['rank1']:.2f} mAP {int8['mAP']:.2f}   mAP drop {drop:.2f}")
        if drop > args.max_map_drop:
            log.error("int8 loses %.2f mAP points (> %.2f): do not offer this model", drop, args.max_map_drop)
            return 1
        stamp(args.out, {GATE_KEY: f"mAP {fp32['mAP']:.2f} -> {int8['mAP']:.2f} on {args.evaluate.name} "
                                   f"(most {args.max_map_drop:.2f} lost)"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
