"""`OnnxWorldModel`: the world model on onnxruntime and numpy, without PyTorch.

What runs on a robot: the graphs `genie-robot export` wrote, behind the same API as the torch
`WorldModel` (`encode`, `decode`, `infer_actions`, `imagine`, and `genie_robot.planning.plan`
on top). Both engines share `genie_robot.core.engine.Engine` (checks, windowing) and the
rollout loop with its one MaskGIT sampler, so the same seed gives the same tokens.

Execution providers are tried in the configured order (TensorRT, CUDA, CPU by default) and
one log line names the active one. The dynamics cache lives in onnxruntime values bound with
IO binding, so on a GPU it stays on the device between MaskGIT steps; only token ids go in and
logits come out (sampling is numpy, on the host).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort

from genie_robot.core.engine import Engine, EngineError, Limits
from genie_robot.models.config import ModelConfig
from genie_robot.runtime.manifest import CODEBOOK, GRAPHS, ONNX_DTYPES, ManifestError, read_manifest
from genie_robot.runtime.providers import CUDA, TENSORRT, provider_options

log = logging.getLogger(__name__)
GPU_PROVIDERS = (TENSORRT, CUDA)
DEFAULT_PROVIDERS = (*GPU_PROVIDERS, "CPUExecutionProvider")


# How onnxruntime holds CPU memory between calls (OnnxWorldModel's `cpu_memory`, docs/BENCHMARKS.md "CPU memory of
# the onnxruntime engine"): "arena" (onnxruntime's default) keeps the largest call's buffers for good, so one
# 8-candidate plan left the node at 2.6 GB; "shrink" keeps the arena within a call and returns its free chunks
# after each; "off" allocates every tensor from the system allocator.
CPU_MEMORY = ("shrink", "arena", "off")


class Graph:
    """One inference session, its manifest entry, and errors that name the graph, never a stack dump."""

    def __init__(self, name: str, path: Path, spec: dict, providers: list, options: ort.SessionOptions,
                 run_options: ort.RunOptions | None = None):
        self.name, self.spec, self.run_options = name, spec, run_options
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as e:  # onnxruntime's own exception types derive from Exception only
            raise ManifestError(f"onnxruntime cannot load graph '{name}' from {path}: {e}") from e
        got = [i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()]
        want = [i["name"] for i in spec["inputs"]], [o["name"] for o in spec["outputs"]]
        if got != want:
            raise ManifestError(f"graph '{name}' in {path} has inputs/outputs {got}, the manifest says {want}")
        self.dtypes = {i["name"]: np.dtype(ONNX_DTYPES[i["dtype"]]) for i in spec["inputs"]}

    def run(self, **inputs: np.ndarray) -> list[np.ndarray]:
        feed = {k: np.ascontiguousarray(v, dtype=self.dtypes[k]) for k, v in inputs.items()}
        try:
            return self.session.run(None, feed, self.run_options)
        except Exception as e:
            shapes = {k: list(v.shape) for k, v in feed.items()}
            raise EngineError(f"onnxruntime failed in graph '{self.name}' on inputs {shapes}: {e}") from e

    def run_bound(self, binding: ort.IOBinding) -> None:
        try:
            self.session.run_with_iobinding(binding, self.run_options)
        except Exception as e:
            raise EngineError(f"onnxruntime failed in graph '{self.name}': {e}") from e


class OnnxWorldModel(Engine):
    def __init__(self, directory: str | Path, providers: list[str] | tuple[str, ...] = DEFAULT_PROVIDERS,
                 limits: Limits | None = None, check_files: bool = True, threads: int = 0,
                 cpu_memory: str = CPU_MEMORY[0], device_id: int = 0, trt_fp16: bool = False,
                 trt_cache: str | Path | None = None):
        """`device_id`, `trt_fp16` (TensorRT may run fp32 graphs in half precision) and `trt_cache` (a directory
        that keeps TensorRT's built engines across restarts) apply to the GPU providers; TensorRT also gets an
        optimization profile per graph from the manifest and `limits` (genie_robot.runtime.providers)."""
        root = Path(directory)
        self.manifest = read_manifest(root, check_files=check_files)
        try:
            self.cfg = ModelConfig.from_dict(self.manifest["model"])
        except (TypeError, ValueError) as e:
            raise ManifestError(f"{root}/manifest.json: model config: {e}") from e
        self.limits, self.source = limits or Limits(), str(root)
        self.providers = self._choose(list(providers))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3  # onnxruntime's own warnings (e.g. unused initializers) stay quiet
        # Between graph calls the sampler runs in numpy; spinning worker threads would take its cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if cpu_memory not in CPU_MEMORY:
            raise EngineError(f"cpu_memory must be one of {', '.join(CPU_MEMORY)}, got {cpu_memory!r}")
        self.cpu_memory = cpu_memory
        options.enable_cpu_mem_arena = cpu_memory != "off"
        run_options = None
        if cpu_memory == "shrink":
            run_options = ort.RunOptions()
            run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        graphs = self.manifest["graphs"]
        self.device_id = device_id

        def with_options(name: str) -> list[tuple[str, dict]]:
            return [(p, provider_options(p, name, graphs[name], self.cfg.frames, self.limits.max_batch, device_id,
                                         trt_fp16, trt_cache)) for p in self.providers]

        self.graphs = {name: Graph(name, root / graphs[name]["files"][0], graphs[name], with_options(name), options,
                                   run_options) for name in GRAPHS if name in graphs}
        self.active = self.graphs["dynamics_step"].session.get_providers()[0]
        self.device = "cuda" if self.active in GPU_PROVIDERS else "cpu"
        log.info("onnxruntime engine: %s active for %s (asked for %s)", self.active, root, ", ".join(providers))
        try:
            self.codebook = np.load(root / CODEBOOK, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ManifestError(f"{root / CODEBOOK} is not a readable codebook: {e}") from e
        temperature = (self.manifest.get("sampling") or {}).get("temperature", self.temperature)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
            raise ManifestError(f"{root}/manifest.json: sampling.temperature must be a finite number > 0, "
                                f"got {temperature!r}")
        self.temperature = float(temperature)
        self.adapter = None
        if self.manifest.get("adapter") is not None:
            from genie_robot.planning.adapter import Adapter

            self.adapter = Adapter.from_dict(self.manifest["adapter"], f"{root}/manifest.json adapter")

    @staticmethod
    def _choose(wanted: list[str]) -> list[str]:
        available = ort.get_available_providers()
        chosen = [p for p in wanted if p in available]
        if not chosen:
            raise EngineError(f"none of the execution providers {wanted} is available in this onnxruntime "
                              f"({ort.__version__}: {available})")
        return chosen

    # --- primitives -----------------------------------------------------------------------
    def _float(self, x: np.ndarray) -> np.ndarray:
        return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x

    def _encode_window(self, frames: np.ndarray) -> np.ndarray:
        return self.graphs["tokenizer_encoder"].run(frames=self._float(frames))[0]

    def _decode_window(self, tokens: np.ndarray) -> np.ndarray:
        return self.graphs["tokenizer_decoder"].run(tokens=tokens)[0].astype(np.float32)

    def _lam_window(self, inputs: np.ndarray) -> np.ndarray:
        x = inputs if self.cfg.lam.input == "tokens" else self._float(inputs)
        return self.graphs["lam_encoder"].run(inputs=x)[0]

    def _has_lam(self) -> bool:
        return "lam_encoder" in self.graphs

    def _codebook(self) -> np.ndarray:
        return self.codebook

    def _backend(self) -> OrtDynamics:
        return OrtDynamics(self.graphs["dynamics_step"], self.graphs["dynamics_append"], self.manifest, self.device,
                           self.device_id)


class OrtDynamics:
    """`DynamicsBackend` over the two dynamics graphs; the cache is (keys, values) as OrtValues."""

    def __init__(self, step: Graph, append: Graph, manifest: dict, device: str, device_id: int = 0):
        self.step_graph, self.append_graph, self.device = step, append, device
        self.device_id = device_id if device == "cuda" else 0
        self.mask_id = int(manifest["mask_id"])
        c = manifest["cache"]
        # Rows per frame: the tokens, plus one for a prepended action token (exports before that have no "rows").
        # One slot per window frame (format 2): every step has the same shapes.
        self.shape = (c["layers"], 1, c.get("rows", manifest["tokens_per_frame"]), c["heads"], c["window"],
                      c["head_dim"])
        self.dtype = step.dtypes["past_k"]

    def _value(self, array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array, dtype=self.dtype), self.device,
                                                self.device_id)

    def _bind(self, graph: Graph, cache, ids_BS, action_B, t) -> ort.IOBinding:
        binding = graph.session.io_binding()
        binding.bind_cpu_input("tokens", np.ascontiguousarray(ids_BS, dtype=np.int64))
        binding.bind_cpu_input("action", np.ascontiguousarray(action_B, dtype=np.int64))
        binding.bind_cpu_input("t", np.array(t, dtype=np.int64))
        binding.bind_ortvalue_input("past_k", cache[0])
        binding.bind_ortvalue_input("past_v", cache[1])
        return binding

    def empty(self):
        zeros = np.zeros(self.shape, self.dtype)
        return self._value(zeros), self._value(zeros)

    def append(self, cache, ids_BS, action_B, t):
        binding = self._bind(self.append_graph, cache, ids_BS, action_B, t)
        binding.bind_output("keys", self.device, self.device_id)
        binding.bind_output("values", self.device, self.device_id)
        self.append_graph.run_bound(binding)
        keys, values = binding.get_outputs()
        return keys, values

    def logits(self, cache, ids_BS, action_B, t):
        binding = self._bind(self.step_graph, cache, ids_BS, action_B, t)
        binding.bind_output("logits", "cpu")
        self.step_graph.run_bound(binding)
        return binding.copy_outputs_to_cpu()[0].astype(np.float32, copy=False)

    def repeat(self, cache, batch):
        # Once per request: the shared context's cache, copied for each candidate.
        return tuple(self._value(np.repeat(c.numpy(), batch, axis=1)) for c in cache)

    def batch(self, cache):
        return cache[0].shape()[1]
