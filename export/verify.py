"""`genie-robot export-verify`: the exported graphs do what the trained torch modules do.

(a) Each graph against its torch module on random valid inputs: float outputs within a
relative error (max |onnx - torch| / max |torch|) of 1e-4 for fp32 exports (1e-2 for fp16; for
int8, QUANTIZED_TOLERANCE for the quantized dynamics graphs and 1e-4 for the rest),
integer outputs (token and action ids) identical (for fp16, at least 99% identical: half
precision may flip a near-tie). (b) End to end, in lockstep: the torch engine's `imagine`, with
every dynamics call (the cache built, slid and appended, each MaskGIT step's logits) also made
in the onnxruntime engine on the same inputs, its logits within the graphs' tolerance at every
step. (c) `imagine` and `plan` run apart in both engines from the same seed: the same tokens and
actions, since both sample by the same rule from the same random draws; where imagine's tokens
part, (b) says whether the logits did (a failure) or a sampling near-tie did (reported, not a
failure: with 8,192 codes whose logits are 100 x a cosine, a 1e-6 difference can reorder two
tokens' confidences, and the rollout then goes its own way).
"""

from __future__ import annotations

import numpy as np
import torch

from genie_robot.inference.world_model import WorldModel
from genie_robot.models.config import SAMPLING
from genie_robot.planning.cem import plan
from genie_robot.runtime import OnnxWorldModel, read_manifest
from genie_robot_export.exporter import PRECISIONS, QUANTIZED, graph_specs

TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 1e-4}
IDS_IDENTICAL = {"fp32": 1.0, "fp16": 0.99, "int8": 1.0}
# int8 exports: the quantized dynamics graphs' own bound (their other graphs are fp32 and held to fp32's).
QUANTIZED_TOLERANCE = 0.05


def _compare(ref: torch.Tensor, got: np.ndarray) -> dict:
    ref = ref.float().numpy() if ref.is_floating_point() else ref.numpy()
    if ref.shape != got.shape:
        return {"shape_torch": list(ref.shape), "shape_onnx": list(got.shape), "ok": False}
    if np.issubdtype(ref.dtype, np.integer):
        return {"identical_fraction": float((ref == got).mean()) if ref.size else 1.0}
    scale = float(np.abs(ref).max()) or 1.0
    return {"rel_error": float(np.abs(ref - got.astype(np.float32)).max() / scale)}


def check_graphs(torch_engine: WorldModel, onnx_engine: OnnxWorldModel, precision: str, seed: int = 0) -> dict:
    """Per graph, on several random input sizes: worst relative error or id agreement."""
    tol = TOLERANCE[precision]
    cfg = torch_engine.cfg
    rng = np.random.default_rng(seed)
    report = {}
    specs = graph_specs(torch_engine, PRECISIONS[precision])
    for name, (module, args, ins, outs, _) in specs.items():
        graph = onnx_engine.graphs[name]
        worst: dict = {}
        for trial in range(3):
            inputs = _random_inputs(name, args, cfg, rng, trial)
            with torch.no_grad():
                ref = module(*(torch.from_numpy(x) for x in inputs))
            ref = ref if isinstance(ref, tuple) else (ref,)
            got = graph.run(**dict(zip(ins, inputs, strict=True)))
            for out_name, r, g in zip(outs, ref, got, strict=True):
                c = _compare(r, g)
                prev = worst.get(out_name)
                if prev is None or c.get("rel_error", 0) > prev.get("rel_error", 0) or \
                        c.get("identical_fraction", 1) < prev.get("identical_fraction", 1) or not c.get("ok", True):
                    worst[out_name] = c
        graph_tol = QUANTIZED_TOLERANCE if precision == "int8" and name in QUANTIZED else tol
        for c in worst.values():
            c["ok"] = c.get("ok", True) and c.get("rel_error", 0) <= graph_tol and \
                c.get("identical_fraction", 1) >= IDS_IDENTICAL[precision]
        report[name] = {"outputs": worst, "ok": all(c["ok"] for c in worst.values())}
    report["tolerance"] = {"rel_error": tol, "ids_identical": IDS_IDENTICAL[precision]}
    if precision == "int8":
        report["tolerance"]["quantized_rel_error"] = QUANTIZED_TOLERANCE
    return report


def _random_inputs(name: str, example_args, cfg, rng: np.random.Generator, trial: int) -> list[np.ndarray]:
    """Valid inputs of varied batch/time sizes (batch 1..3, time 1..window) in the example's dtypes."""
    b = 1 + trial
    f = cfg.frames
    dtype = example_args[-1].numpy().dtype if name.startswith("dynamics") else None
    if name.startswith("tokenizer") or name == "lam_encoder":
        t = [f, 2, max(2, f - 1)][trial] if name == "lam_encoder" else [1, f, 2][trial]
        x = example_args[0].numpy()
        if np.issubdtype(x.dtype, np.integer):
            return [rng.integers(0, cfg.tokenizer.num_codes, (b, t, x.shape[2]))]
        return [rng.random((b, t, *x.shape[2:])).astype(x.dtype)]
    tp = [0, f - 1, 1][trial]
    k = example_args[3].numpy()
    cache = k.shape[:1] + (b,) + k.shape[2:]  # the window's slots; those from tp on hold noise the graph ignores
    tokens = rng.integers(0, cfg.tokenizer.num_codes + 1, (b, example_args[0].shape[1]))
    action = rng.integers(-1, cfg.lam.num_actions, b) if tp else np.full(b, -1)
    return [tokens, action, np.array(tp), rng.standard_normal(cache).astype(dtype),
            rng.standard_normal(cache).astype(dtype)]


class Lockstep:
    """A `DynamicsBackend` that runs every call in both engines' backends on the same inputs and continues
    with the torch engine's results, recording how far the onnxruntime logits are from the torch ones."""

    def __init__(self, torch_backend, onnx_backend):
        self.a, self.b = torch_backend, onnx_backend
        self.mask_id = torch_backend.mask_id
        self.rel_error, self.calls = 0.0, 0

    def empty(self):
        return self.a.empty(), self.b.empty()

    def append(self, cache, ids_BS, action_B, t):
        return self.a.append(cache[0], ids_BS, action_B, t), self.b.append(cache[1], ids_BS, action_B, t)

    def logits(self, cache, ids_BS, action_B, t):
        ta = np.asarray(self.a.logits(cache[0], ids_BS, action_B, t), dtype=np.float32)
        tb = np.asarray(self.b.logits(cache[1], ids_BS, action_B, t), dtype=np.float32)
        self.rel_error = max(self.rel_error, float(np.abs(ta - tb).max() / max(np.abs(ta).max(), 1e-12)))
        self.calls += 1
        return ta

    def repeat(self, cache, batch):
        return self.a.repeat(cache[0], batch), self.b.repeat(cache[1], batch)

    def batch(self, cache):
        return self.a.batch(cache[0])


def check_rollouts(torch_engine: WorldModel, onnx_engine: OnnxWorldModel, seed: int = 0,
                   rel_tolerance: float = 1e-4) -> dict:
    """imagine in lockstep (logits within `rel_tolerance` at every step); imagine and plan apart in both
    engines from the same seed (identical tokens and actions, or a divergence the lockstep clears)."""
    cfg = torch_engine.cfg
    rng = np.random.default_rng(seed)
    h, w = cfg.resolution
    n_ctx = min(3, cfg.frames)
    context = rng.integers(0, 256, (n_ctx, cfg.channels, h, w), dtype=np.uint8)
    horizon = cfg.frames + 1  # past the window: the cache slides
    acts = rng.integers(0, cfg.lam.num_actions, (3, horizon))
    # 4 MaskGIT steps, planning's: the check is of the engines' agreement, not of sampling quality, and its three
    # rollouts at 6 steps took most of export-verify's 116 s in make demo (sim-rt1, 2 cores).
    kw = {"steps": 4, "temperature": SAMPLING.temperature, "seed": seed}
    if not onnx_engine._has_lam():
        kw["context_actions"] = rng.integers(0, cfg.lam.num_actions, n_ctx - 1)
    a, b = torch_engine.imagine(context, acts, **kw), onnx_engine.imagine(context, acts, **kw)
    lock = Lockstep(torch_engine._backend(), onnx_engine._backend())
    own = torch_engine._backend
    torch_engine._backend = lambda: lock  # this one call's dynamics through both engines
    try:
        locked = torch_engine.imagine(context, acts, **kw)
    finally:
        torch_engine._backend = own
    identical = bool(np.array_equal(a.tokens, b.tokens))
    imagine = {"tokens_identical": identical,
               "frames_max_abs_diff": int(np.abs(a.frames.astype(int) - b.frames.astype(int)).max()),
               "batch": 3, "horizon": horizon,
               "lockstep": {"logits_rel_error": lock.rel_error, "dynamics_calls": lock.calls,
                            # the lockstep samples with the numpy sampler, the torch engine alone on its device:
                            "tokens_as_torch_alone": bool(np.array_equal(locked.tokens, a.tokens)),
                            "ok": lock.rel_error <= rel_tolerance and lock.calls > 0}}
    if not identical:
        same = (a.tokens == b.tokens).reshape(a.tokens.shape[0], a.tokens.shape[1], -1).mean(-1)
        first = np.argwhere(same < 1)
        frame = int(first[:, 1].min())
        imagine["first_divergence"] = {"frame": frame, "candidates": sorted({int(c) for c, f in first if f == frame}),
                                       "tokens_identical_there": round(float(same[:, frame].min()), 4)}
        imagine["divergence"] = "sampling near-tie" if imagine["lockstep"]["ok"] else "logits differ"
    goal = rng.integers(0, 256, (cfg.channels, h, w), dtype=np.uint8)
    plan_kw = {"horizon": 2, "num_samples": 6, "iterations": 2, "seed": seed, "steps": 4}
    if onnx_engine._has_lam():
        pa, pb = plan(torch_engine, context, goal, **plan_kw), plan(onnx_engine, context, goal, **plan_kw)
        plans = {"actions_identical": bool(np.array_equal(pa.actions, pb.actions)),
                 "cost_torch": pa.cost, "cost_onnx": pb.cost}
    else:
        plans = {"skipped": "no LAM in this export: plan needs context actions from it"}
    return {"imagine": imagine, "plan": plans,
            "ok": imagine["lockstep"]["ok"] and plans.get("actions_identical", True)}


def verify(ckpt: str, export_dir: str, seed: int = 0) -> dict:
    manifest = read_manifest(export_dir)
    precision = manifest["precision"]
    torch_engine = WorldModel.load(ckpt, dtype=PRECISIONS[precision])
    onnx_engine = OnnxWorldModel(export_dir, providers=["CPUExecutionProvider"])
    graphs = check_graphs(torch_engine, onnx_engine, precision, seed)
    rollouts = check_rollouts(WorldModel.load(ckpt), onnx_engine, seed) if precision == "fp32" else \
        {"skipped": f"{precision} graphs sample other tokens than the fp32 torch model by design", "ok": True}
    ok = all(g["ok"] for k, g in graphs.items() if k != "tolerance") and rollouts["ok"]
    return {"export": str(export_dir), "ckpt": str(ckpt), "precision": precision, "provider": onnx_engine.active,
            "graphs": graphs, "rollouts": rollouts, "ok": ok}
