"""The compiled CPU engine's C++ kernels (cpu_kernels.cpp): built on first use, then called from compiled graphs.

A batch-1 MaskGIT step of a small model attends over few tokens, and there the generic kernels spend most of
their time outside the arithmetic: the CPU SDPA kernel issues small BLAS calls per block of queries, and
inductor turns the cached temporal attention into a dozen parallel loops with a horizontal sum per key
(docs/BENCHMARKS.md, "C++ kernels for the attention and the sampling"). `genie::attention` and
`genie::cached_attention` do the same arithmetic in one pass each, float32 only, and `genie::maskgit_sample` a
MaskGIT step's sampling (the rule of `sampling.step`) reading only the masked tokens' logits.

`load()` compiles the C++ source once per source, torch version and CPU (g++ -O3 -march=native, a few
seconds), into a cache directory ($GENIE_ROBOT_KERNELS_DIR, default ~/.cache/genie_robot/kernels; written
to a temporary name and renamed, so a cut build leaves nothing half-written), and loads it. `WorldModel.compile`
calls it. The attention modules and the sampler then use the kernels only while torch.compile traces them
(`in_use`), for float32 CPU tensors (and head widths the kernels take): the eager engine, the ONNX export and
every other dtype or device keep the same math through torch's own operators.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("cpu_kernels.cpp")
HEAD_WIDTHS = (16, 32, 64, 128)  # the head widths the kernels take (whole vectors of 16 floats)
_loaded = False


class KernelBuildError(RuntimeError):
    """The C++ kernels did not compile or load (the compiler's own message follows)."""


def cache_dir() -> Path:
    return Path(os.environ.get("GENIE_ROBOT_KERNELS_DIR", Path.home() / ".cache" / "genie_robot" / "kernels"))


def _cpu_id() -> str:
    """What decides the machine code -march=native makes: the CPU's model and flags."""
    try:
        info = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
        return "\n".join(line for line in info.splitlines() if line.startswith(("model name", "flags", "Features")))
    except OSError:
        return os.uname().machine


def _command(compiler: str, source: Path, out: Path) -> list[str]:
    from torch.utils import cpp_extension

    includes = [f"-I{p}" for p in cpp_extension.include_paths()]
    libs = [f"-L{p}" for p in cpp_extension.library_paths()]
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    return [compiler, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++20", abi,
            *includes, str(source), *libs, "-lc10", "-ltorch_cpu", "-o", str(out)]


def library_path() -> Path:
    """Where the built kernels for this source, torch and CPU are (or will be)."""
    key = hashlib.sha256(SOURCE.read_bytes() + torch.__version__.encode() + _cpu_id().encode()).hexdigest()[:16]
    return cache_dir() / f"genie_cpu_kernels_{key}.so"


def build() -> Path:
    """The kernels' shared library, compiled if this source, torch and CPU have none yet."""
    target = library_path()
    if target.is_file():
        return target
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise KernelBuildError(f"building the CPU kernels needs a C++ compiler ({compiler}); install one "
                               f"(apt install g++) or run eager (no compile)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        partial = Path(tmp) / target.name
        done = subprocess.run(_command(compiler, SOURCE, partial), capture_output=True, text=True)
        if done.returncode != 0:
            raise KernelBuildError(f"compiling {SOURCE} failed ({compiler}, exit {done.returncode}):\n"
                                   f"{done.stderr[-4000:]}")
        os.replace(partial, target)  # atomic: another process sees the whole library or none
    return target


def load() -> None:
    """Builds (first time) and loads the kernels into torch.ops.genie; idempotent."""
    global _loaded
    if _loaded:
        return
    torch.ops.load_library(str(build()))

    @torch.library.register_fake("genie::attention")
    def _attention(qkv, q_weight, k_weight, eps, scale, causal, keys):
        n, length, _, heads, dh = qkv.shape
        return qkv.new_empty((n, length, heads * dh)), qkv.new_empty((n, length, heads, dh) if keys else (0,))

    @torch.library.register_fake("genie::cached_attention")
    def _cached(qkv, q_weight, k_weight, eps, cache_k, cache_v, valid, scale):
        n, _, heads, dh = qkv.shape
        return qkv.new_empty((n, heads * dh)), qkv.new_empty((n, heads, dh))

    @torch.library.register_fake("genie::maskgit_sample")
    def _sample(logits, ids, mask_id, u, keep, inv_temperature, block):
        return ids.new_empty(ids.shape)

    _loaded = True


def in_use(x: torch.Tensor, head_dim: int | None = None) -> bool:
    """Whether a call on `x` goes through these kernels: only inside a graph that torch.compile is tracing without
    gradients (they have no backward), never in an export (an ONNX graph must not name them), once `load` has
    run, for float32 CPU tensors and (attention) a head width they take."""
    return (_loaded and torch.compiler.is_compiling() and not torch.compiler.is_exporting()
            and not torch.onnx.is_in_onnx_export() and not torch.is_grad_enabled() and x.device.type == "cpu"
            and x.dtype == torch.float32 and (head_dim is None or head_dim in HEAD_WIDTHS))
