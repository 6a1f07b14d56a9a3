"""Execution-provider options for the onnxruntime engine on a GPU robot: CUDA and TensorRT.

onnxruntime takes per-provider options as strings. TensorRT builds an engine per input-shape
range, so each graph needs an optimization profile (min/opt/max shape of every input with a free
axis); without one it rebuilds the engine whenever a new batch size or window length arrives,
seconds each time, in the middle of a planner's request. The ranges come from the export's
manifest (which axes are free: "batch", "time") and the engine's `Limits` (how large a batch
may get), so a profile covers every request the engine accepts and nothing it refuses. The
engine cache directory keeps the built engines across restarts, one subdirectory per graph.
"""

from __future__ import annotations

from pathlib import Path

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"


def axis_range(axis: str, graph: str, window: int, max_batch: int, opt_batch: int) -> tuple[int, int, int]:
    """(min, opt, max) of a named free axis of a graph's input."""
    if axis == "batch":
        return 1, max(1, min(opt_batch, max_batch)), max_batch
    if axis == "time":
        low = 2 if graph == "lam_encoder" else 1  # the LAM needs a pair of frames
        return low, window, window
    raise ValueError(f"graph '{graph}' has an input axis '{axis}' this runtime does not know (expected batch or "
                     f"time): re-export the model with this genie-robot version")


def tensorrt_profile(graph: str, spec: dict, window: int, max_batch: int, opt_batch: int = 1) -> dict[str, str]:
    """TensorRT's trt_profile_{min,opt,max}_shapes for one graph ("name:1x320,other:..."), over the inputs
    that have a free axis; {} when none has."""
    shapes: dict[str, list[str]] = {"min": [], "opt": [], "max": []}
    for item in spec["inputs"]:
        dims = item["shape"]
        if all(isinstance(d, int) for d in dims):
            continue
        ranges = [(d, d, d) if isinstance(d, int) else axis_range(d, graph, window, max_batch, opt_batch)
                  for d in dims]
        for i, key in enumerate(("min", "opt", "max")):
            shapes[key].append(f"{item['name']}:{'x'.join(str(r[i]) for r in ranges)}")
    if not shapes["min"]:
        return {}
    return {f"trt_profile_{key}_shapes": ",".join(v) for key, v in shapes.items()}


def provider_options(provider: str, graph: str, spec: dict, window: int, max_batch: int, device_id: int = 0,
                     fp16: bool = False, engine_cache: str | Path | None = None, opt_batch: int = 1) -> dict:
    """The options onnxruntime gets for `provider` when it loads `graph` (its manifest entry `spec`)."""
    if provider == CUDA:
        return {"device_id": str(device_id)}
    if provider != TENSORRT:
        return {}
    options = {"device_id": str(device_id), "trt_fp16_enable": str(fp16), **tensorrt_profile(
        graph, spec, window, max_batch, opt_batch)}
    if engine_cache is not None:
        path = Path(engine_cache) / graph
        path.mkdir(parents=True, exist_ok=True)
        options.update({"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(path),
                        "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(path)})
    return options
