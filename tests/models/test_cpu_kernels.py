"""The compiled CPU engine's attention kernels (genie_robot.models.cpu_kernels): built once, the same numbers as the
torch operators they replace, invalid cache slots never read, clear errors for what they do not take."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from genie_robot.config import config_dir, typed
from genie_robot.models import ModelConfig, build, cpu_kernels
from genie_robot.models.st_transformer import Attention


@pytest.fixture(scope="module", autouse=True)
def kernels(tmp_path_factory):
    """Built into a fresh directory: the build itself is under test (the first `load` compiles)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENIE_ROBOT_KERNELS_DIR", str(tmp_path_factory.mktemp("kernels")))
        cpu_kernels.load()
        yield


def reference(qkv: torch.Tensor, qw: torch.Tensor, kw: torch.Tensor, causal: bool):
    """torch's operators: RMS-normed queries and keys, SDPA; y [N, L, H*dh], normed keys [N, L, H, dh]."""
    q, k, v = qkv.unbind(2)
    q, k = F.rms_norm(q, (q.shape[-1],), qw), F.rms_norm(k, (k.shape[-1],), kw)
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal)
    return y.transpose(1, 2).flatten(2), k


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("n", "length", "heads", "dh"), [(1, 80, 4, 32), (3, 7, 2, 16), (80, 8, 4, 32),
                                                          (2, 37, 1, 64), (1, 5, 3, 128)])
def test_attention_is_sdpa_over_the_normed_queries_and_keys(causal, n, length, heads, dh):
    torch.manual_seed(n * length + dh)
    # As the module hands it over: a view of the qkv matmul's output (strided, last dimension contiguous).
    qkv = torch.randn(n, length, 3 * heads * dh).view(n, length, 3, heads, dh)
    qw, kw = torch.rand(dh) + 0.5, torch.rand(dh) + 0.5
    eps = torch.finfo(torch.float32).eps
    y, k = torch.ops.genie.attention(qkv, qw, kw, eps, dh**-0.5, causal, True)
    ref_y, ref_k = reference(qkv, qw, kw, causal)
    torch.testing.assert_close(y, ref_y, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(k, ref_k, atol=2e-6, rtol=1e-5)
    assert torch.ops.genie.attention(qkv, qw, kw, eps, dh**-0.5, causal, False)[1].numel() == 0


@pytest.mark.parametrize("valid", [[], [0], [0, 1, 2, 3, 4], list(range(16)), [1, 4, 9]])
def test_cached_attention_reads_the_valid_slots_only(valid):
    """The cached step's attention equals `Attention.attend_cached` (torch's operators); the invalid slots hold
    NaN, which would reach the output if they were read."""
    torch.manual_seed(len(valid))
    attn = Attention(64, 2, 64).eval()
    with torch.no_grad():
        attn.q_norm.weight.uniform_(0.5, 1.5)
        attn.k_norm.weight.uniform_(0.5, 1.5)
    n, w = 12, 16
    x = torch.randn(n, 1, 64)
    mask = torch.zeros(w, dtype=torch.bool)
    mask[valid] = True
    cache_k, cache_v = torch.randn(n, 2, w, 32), torch.randn(n, 2, w, 32)
    ref_y = attn.attend_cached(*attn.project(x), cache_k, cache_v, mask)
    cache_k[:, :, ~mask], cache_v[:, :, ~mask] = float("nan"), float("nan")
    qkv = attn.qkv(x).view(n, 3, 2, 32).detach()
    y, k = torch.ops.genie.cached_attention(qkv, attn.q_norm.weight.detach(), attn.k_norm.weight.detach(),
                                            torch.finfo(torch.float32).eps, cache_k, cache_v, mask, 32**-0.5)
    torch.testing.assert_close(attn.out(y).unsqueeze(1).detach(), ref_y.detach(), atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(k, attn.project(x)[1][:, :, 0].detach(), atol=2e-6, rtol=1e-5)


def test_the_kernels_reject_what_they_do_not_take_with_the_reason():
    qkv, w = torch.randn(2, 5, 3, 2, 32), torch.ones(32)
    with pytest.raises(RuntimeError, match="float32 CPU tensors; qkv is Double"):
        torch.ops.genie.attention(qkv.double(), w, w, 1e-6, 1.0, False, False)
    with pytest.raises(RuntimeError, match="head widths 16, 32, 64 or 128, got 24"):
        torch.ops.genie.attention(torch.randn(2, 5, 3, 2, 24), torch.ones(24), torch.ones(24), 1e-6, 1.0, False, False)
    with pytest.raises(RuntimeError, match=r"q_weight must be \[32\]"):
        torch.ops.genie.attention(qkv, torch.ones(16), w, 1e-6, 1.0, False, False)
    with pytest.raises(RuntimeError, match=r"caches must be \[N, H, W, dh\]"):
        torch.ops.genie.cached_attention(qkv[:, 0], w, w, 1e-6, torch.randn(2, 3, 4, 32), torch.randn(2, 3, 4, 32),
                                         torch.ones(4, dtype=torch.bool), 1.0)
    with pytest.raises(RuntimeError, match="valid mask must be a CPU bool"):
        torch.ops.genie.cached_attention(qkv[:, 0], w, w, 1e-6, torch.randn(2, 2, 4, 32), torch.randn(2, 2, 4, 32),
                                         torch.ones(4), 1.0)


def test_a_built_library_is_reused_and_a_changed_source_builds_anew(monkeypatch, tmp_path):
    """One library per source, torch and CPU, in the cache directory; nothing else is left there."""
    monkeypatch.setenv("GENIE_ROBOT_KERNELS_DIR", str(tmp_path))
    first = cpu_kernels.build()
    stamp = first.stat().st_mtime_ns
    assert cpu_kernels.build() == first and first.stat().st_mtime_ns == stamp
    changed = tmp_path / "changed.cpp"
    changed.write_text(cpu_kernels.SOURCE.read_text() + "\n// changed\n")
    monkeypatch.setattr(cpu_kernels, "SOURCE", changed)
    assert cpu_kernels.library_path() != first
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++")
    monkeypatch.setattr(cpu_kernels, "SOURCE", broken)
    with pytest.raises(cpu_kernels.KernelBuildError, match="compiling .*broken.cpp failed"):
        cpu_kernels.build()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, "changed.cpp", "broken.cpp"])


def test_the_compiled_float32_engine_runs_the_kernels_and_samples_nearly_the_eager_tokens():
    """`WorldModel.compile` on the CPU in float32: the dynamics, tokenizer and LAM graphs call the kernels, and
    the tokens are the eager engine's except where float rounding moves a draw across a boundary."""
    from genie_robot.inference.world_model import Limits, WorldModel

    with initialize_config_dir(config_dir=str(config_dir() / "model"), version_base="1.3"):
        cfg = typed(compose(config_name="tiny"), ModelConfig)
    torch.manual_seed(0)
    parts = {c: build(cfg, c) for c in ("tokenizer", "lam", "dynamics")}
    eager = WorldModel(cfg, parts["tokenizer"], parts["dynamics"], lam=parts["lam"], limits=Limits(4, 6))
    compiled = WorldModel(cfg, parts["tokenizer"], parts["dynamics"], lam=parts["lam"], limits=Limits(4, 6)).compile()
    h, w = cfg.resolution
    ctx = np.random.default_rng(0).integers(0, 256, (3, 3, h, w), dtype=np.uint8)
    actions = np.random.default_rng(1).integers(0, cfg.lam.num_actions, (2, 4))
    compiled.imagine(ctx, actions, steps=5, seed=0)  # compiles
    with torch.profiler.profile() as prof:
        fast = compiled.imagine(ctx, actions, steps=5, seed=3)
    called = {e.key for e in prof.events()}
    assert {"genie::attention", "genie::cached_attention", "genie::maskgit_sample"} <= called
    slow = eager.imagine(ctx, actions, steps=5, seed=3)
    assert (fast.tokens == slow.tokens).mean() > 0.95


@pytest.mark.parametrize(("b", "s", "v"), [(1, 80, 1024), (3, 40, 64), (2, 33, 100)])
def test_maskgit_sample_draws_what_the_torch_sampler_draws_from_the_masked_rows_only(b, s, v):
    """One MaskGIT step: the tokens of `sampling.step` (torch's operators) for peaked and flat logits, with the
    known rows' logits NaN (never read) and the schedule's `keep` least confident draws masked again."""
    from genie_robot.core.maskgit import BLOCK
    from genie_robot.models import sampling

    gen = torch.Generator().manual_seed(v)
    for scale in (0.3, 3.0, 30.0):
        logits = torch.randn(b, s, v, generator=gen) * scale
        ids = torch.randint(0, v, (b, s), generator=gen)
        ids[torch.rand(b, s, generator=gen) < 0.7] = v  # masked: the mask id is the vocabulary size
        u = torch.rand(b, s, dtype=torch.float64, generator=gen)
        keep, inv_t = torch.tensor(int((ids == v).sum(1).min()) // 2), torch.tensor(0.5)
        expected = sampling.step(logits, ids, v, u, keep, inv_t, BLOCK)
        logits[ids != v] = float("nan")
        out = torch.ops.genie.maskgit_sample(logits, ids, v, u, keep, inv_t, BLOCK)
        assert (out == expected).float().mean() > 0.99  # a uniform within float rounding of a boundary may differ
        assert ((out == v).sum(1) == keep).all() and (out[ids != v] == ids[ids != v]).all()


def test_maskgit_sample_rejects_what_it_does_not_take_with_the_reason():
    logits, ids, u = torch.randn(1, 4, 16), torch.full((1, 4), 16), torch.rand(1, 4, dtype=torch.float64)
    one, half = torch.tensor(1), torch.tensor(0.5)
    with pytest.raises(RuntimeError, match="float32 CPU logits"):
        torch.ops.genie.maskgit_sample(logits.double(), ids, 16, u, one, half, 128)
    with pytest.raises(RuntimeError, match=r"u must be float64 \[1, 4\]"):
        torch.ops.genie.maskgit_sample(logits, ids, 16, u.float(), one, half, 128)
    with pytest.raises(RuntimeError, match=r"ids must be int64 \[1, 4\]"):
        torch.ops.genie.maskgit_sample(logits, ids[:, :2], 16, u, one, half, 128)
