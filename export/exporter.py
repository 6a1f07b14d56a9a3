"""`genie-robot export`: a trained run directory to ONNX graphs plus a manifest, for the runtime.

Graphs come from `torch.onnx.export(dynamo=True)` with a dynamic batch axis (and time axis
where it applies) at the given opset; weights go to a `.onnx.data` file beside each graph, so
models past protobuf's 2 GB limit export the same way. `precision=fp16` exports half-precision
graphs (for GPU robots; token ids and the sampler stay exact); `precision=int8` quantizes the
dynamics graphs' weights to int8 (onnxruntime's dynamic quantization: activations quantized per
call), for CPU robots, and keeps the tokenizer and LAM graphs in fp32 so frames still map to the
same tokens and actions. The directory is written under
a temporary name and renamed when complete, so a failed export never leaves a directory that
looks usable.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

import genie_robot
from genie_robot.inference.world_model import WorldModel
from genie_robot.runtime.manifest import CODEBOOK, FORMAT, FORMAT_VERSION, MANIFEST, read_manifest, sha256
from genie_robot_export.graphs import DynamicsAppend, DynamicsStep, MethodGraph

# Export precision -> the torch dtype the graphs are traced in (int8 quantizes fp32 graphs afterwards).
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "int8": torch.float32}
QUANTIZED = ("dynamics_step", "dynamics_append")  # the graphs `int8` quantizes: most of a rollout's arithmetic
ONNX_TYPES = {onnx.TensorProto.FLOAT: "tensor(float)", onnx.TensorProto.FLOAT16: "tensor(float16)",
              onnx.TensorProto.INT64: "tensor(int64)"}
EXAMPLE_BATCH, EXAMPLE_TIME = 2, 3  # example sizes > 1, so the exporter keeps those axes symbolic


def graph_specs(engine: WorldModel, dtype: torch.dtype) -> dict:
    """name -> (module, example inputs, input names, output names, dynamic axes) for each graph."""
    cfg = engine.cfg
    h, w = cfg.resolution
    s, f, v = cfg.tokens_per_frame(), cfg.frames, cfg.tokenizer.num_codes
    gen = torch.Generator().manual_seed(0)
    b, t = EXAMPLE_BATCH, min(EXAMPLE_TIME, f)
    batch = torch.export.Dim("batch", min=1, max=4096)
    time = torch.export.Dim("time", min=1, max=f)
    frames = torch.rand(b, t, cfg.channels, h, w, generator=gen).to(dtype)
    tokens = torch.randint(0, v, (b, t, s), generator=gen)
    specs = {
        "tokenizer_encoder": (MethodGraph(engine.tokenizer, "encode"), (frames,), ["frames"], ["tokens"],
                              {"frames": {0: batch, 1: time}}),
        "tokenizer_decoder": (MethodGraph(engine.tokenizer, "decode"), (tokens,), ["tokens"], ["frames"],
                              {"tokens": {0: batch, 1: time}}),
    }
    if engine.lam is not None:
        lam_time = torch.export.Dim("time", min=2, max=f)
        lam_in = tokens if cfg.lam.input == "tokens" else frames
        specs["lam_encoder"] = (MethodGraph(engine.lam, "infer_actions"), (lam_in,), ["inputs"], ["actions"],
                                {"inputs": {0: batch, 1: lam_time}})
    tc = cfg.dynamics.transformer
    past_t = min(2, f - 1)
    cache = (tc.num_layers, b, engine.dynamics.rows, tc.num_heads, f, tc.inner_dim // tc.num_heads)
    dyn_args = (torch.randint(0, v + 1, (b, s), generator=gen), torch.tensor([1, -1]), torch.tensor(past_t),
                torch.randn(cache, generator=gen).to(dtype), torch.randn(cache, generator=gen).to(dtype))
    dyn_in = ["tokens", "action", "t", "past_k", "past_v"]
    dyn_axes = {"tokens": {0: batch}, "action": {0: batch}, "t": None, "past_k": {1: batch}, "past_v": {1: batch}}
    specs["dynamics_step"] = (DynamicsStep(engine.dynamics), dyn_args, dyn_in, ["logits"], dyn_axes)
    specs["dynamics_append"] = (DynamicsAppend(engine.dynamics), dyn_args, dyn_in, ["keys", "values"], dyn_axes)
    return specs


def _io(values) -> list[dict]:
    out = []
    for vi in values:
        t = vi.type.tensor_type
        shape = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        out.append({"name": vi.name, "dtype": ONNX_TYPES.get(t.elem_type, str(t.elem_type)), "shape": shape})
    return out


def _export_graph(module, args, path: Path, input_names, output_names, axes, opset: int) -> None:
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter, not about this model
        # dynamic_shapes by position (the wrappers' argument names are not the graph's input names)
        torch.onnx.export(module, args, str(path), dynamo=True, dynamic_shapes=tuple(axes.values()),
                          opset_version=opset, input_names=input_names, output_names=output_names,
                          external_data=True, verbose=False)


def _quantize(directory: Path, name: str) -> None:
    """The graph `name` in `directory` with its matmul weights in int8 (per output channel), in place."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = directory / f"{name}.onnx", directory / f"{name}.int8.onnx"
    quantize_dynamic(src, dst, op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                     weight_type=QuantType.QInt8, use_external_data_format=True)
    for f in directory.glob(f"{name}.onnx*"):
        f.unlink()
    model = onnx.load(str(dst))  # with its external data, so it can be saved again under the graph's own name
    onnx.save(model, str(src), save_as_external_data=True, location=f"{name}.onnx.data")
    for f in directory.glob(f"{name}.int8.onnx*"):
        f.unlink()


def export(ckpt: str | Path, out: str | Path, precision: str = "fp32", opset: int = 18, progress=print) -> Path:
    """Exports the run in `ckpt` to `out`; returns the manifest's path."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got '{precision}'")
    return export_engine(WorldModel.load(ckpt, dtype=PRECISIONS[precision]), out, opset, progress,
                         quantize=precision == "int8")


def export_engine(engine: WorldModel, out: str | Path, opset: int = 18, progress=print, quantize: bool = False
                  ) -> Path:
    """Exports a loaded torch engine (its dtype decides the precision; `quantize`: int8 dynamics) to `out`."""
    precision = {v: k for k, v in PRECISIONS.items() if k != "int8"}.get(engine.dtype)
    if precision is None:
        raise ValueError(f"engines in float32 or float16 export; this one is {engine.dtype}")
    if quantize:
        if precision != "fp32":
            raise ValueError("int8 quantizes fp32 graphs; load the engine in float32")
        precision = "int8"
    if not isinstance(opset, int) or opset < 18:
        raise ValueError(f"opset must be an integer >= 18 (the exporter's minimum), got {opset!r}")
    out = Path(out)
    if out.exists() and not (out / MANIFEST).is_file():
        raise ValueError(f"{out} exists and is not an earlier export (no {MANIFEST}); choose another out=")
    dtype, cfg = engine.dtype, engine.cfg
    for name in ("torch.onnx", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        graphs = {}
        for name, (module, args, ins, outs, axes) in graph_specs(engine, dtype).items():
            progress(f"export: {name}")
            _export_graph(module, args, tmp / f"{name}.onnx", ins, outs, axes, opset)
            if precision == "int8" and name in QUANTIZED:
                progress(f"export: {name} to int8")
                _quantize(tmp, name)
            model = onnx.load(str(tmp / f"{name}.onnx"), load_external_data=False)
            files = sorted(p.name for p in tmp.glob(f"{name}.onnx*"))
            graphs[name] = {"files": files, "inputs": _io(model.graph.input), "outputs": _io(model.graph.output)}
        codebook = engine._codebook()
        np.save(tmp / CODEBOOK, codebook.astype(np.float32), allow_pickle=False)
        tc = cfg.dynamics.transformer
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "genie_robot_version": genie_robot.__version__,
            "precision": precision,
            "quantized": list(QUANTIZED) if precision == "int8" else [],  # graphs with int8 weights
            "model": cfg.to_dict(),
            "resolution": list(cfg.resolution),
            "channels": cfg.channels,
            "context_frames": cfg.frames,
            "tokens_per_frame": cfg.tokens_per_frame(),
            "vocab": cfg.tokenizer.num_codes,
            "num_actions": cfg.lam.num_actions,
            "mask_id": engine.dynamics.mask_id,
            "lam_input": cfg.lam.input,
            "cache": {"layers": tc.num_layers, "heads": tc.num_heads, "head_dim": tc.inner_dim // tc.num_heads,
                      "rows": engine.dynamics.rows,  # tokens per frame, + 1 with a prepended action token
                      "window": cfg.frames,  # slots; a step reads those before t, the append graph writes slot t
                      "layout": ["layers", "batch", "tokens", "heads", "window", "head_dim"]},
            "graphs": graphs,
            "files": {p.name: sha256(p) for p in sorted(tmp.iterdir())},
            "exporter": {"torch": torch.__version__, "onnx": onnx.__version__,
                         "onnxscript": importlib.metadata.version("onnxscript"), "opset": opset},
            "adapter": engine.adapter.to_dict() if engine.adapter is not None else None,
            "sampling": {"temperature": engine.temperature},  # the model's default, e.g. its card's
            "source": engine.source,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        read_manifest(tmp)  # what the runtime will check, checked before the directory appears
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / MANIFEST
