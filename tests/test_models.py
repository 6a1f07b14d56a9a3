"""Genie components: shapes, causality, gradients, and every config's parameter count."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from genie_robot.config import config_dir, typed
from genie_robot.models import COMPONENTS, ModelConfig, STConfig, STTransformer, build, mask_tokens

MODEL_CONFIGS = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml") if not p.stem.startswith("_"))


def model_config(name: str) -> ModelConfig:
    with initialize_config_dir(config_dir=str(config_dir() / "model"), version_base="1.3"):
        return typed(compose(config_name=name), ModelConfig)


@pytest.fixture(scope="module")
def tiny() -> ModelConfig:
    return model_config("tiny")


def test_registry_lists_every_size_the_issue_names():
    expected = {"tiny", "demo", "paper_tokenizer", "paper_lam", "rt1_2.5b",
                *(f"ladder_{s}" for s in ("41m", "96m", "192m", "404m", "811m", "1.6b", "2.7b"))}
    assert expected <= set(MODEL_CONFIGS)


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_parameter_count_matches_the_named_size(name):
    cfg = model_config(name)
    assert cfg.named_params, f"configs/model/{name}.yaml names no size"
    with torch.device("meta"):  # no memory, even for 2.5B
        counts = {c: sum(p.numel() for p in build(cfg, c).parameters()) for c in COMPONENTS}
    counts["total"] = sum(counts.values())
    for part, named in cfg.named_params.items():
        assert abs(counts[part] - named) <= 0.1 * named, f"{name}.{part}: {counts[part]:,} vs named {named:,.0f}"


def test_shapes(tiny):
    b, t, (h, w) = 2, tiny.frames, tiny.resolution
    x = torch.rand(b, t, 3, h, w)
    tok, lam, dyn = (build(tiny, c) for c in COMPONENTS)
    out = tok(x)
    s = tiny.tokens_per_frame()
    assert out.recon.shape == x.shape and out.vq.indices.shape == (b, t, s)
    assert tok.encode(x).shape == (b, t, s) and tok.decode(tok.encode(x)).shape == x.shape
    lo = lam(x)
    assert lo.recon.shape == (b, t - 1, 3, h, w) and lo.actions.shape == (b, t - 1)
    assert int(lo.actions.max()) < tiny.lam.num_actions
    logits = dyn(tok.encode(x), lam.infer_actions(x))
    assert logits.shape == (b, t, s, tiny.tokenizer.num_codes)


@pytest.mark.parametrize("layout", ["st", "full"])
def test_st_transformer_is_causal_in_time(layout):
    torch.manual_seed(0)
    net = STTransformer(STConfig(d_model=16, num_layers=2, num_heads=2, attention=layout)).eval()
    x = torch.randn(2, 5, 6, 16)
    for t in range(4):
        changed = x.clone()
        changed[:, t + 1 :] += torch.randn_like(changed[:, t + 1 :])
        a, b = net(x), net(changed)
        assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-6)
        assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def test_dynamics_logits_are_causal(tiny):
    torch.manual_seed(0)
    dyn = build(tiny, "dynamics").eval()
    b, t, s = 2, tiny.frames, tiny.tokens_per_frame()
    tokens = torch.randint(0, tiny.tokenizer.num_codes, (b, t, s))
    actions = torch.randint(0, tiny.lam.num_actions, (b, t - 1))
    base = dyn(tokens, actions)
    for k in range(t - 1):
        other_tokens = tokens.clone()
        other_tokens[:, k + 1] = (other_tokens[:, k + 1] + 1) % tiny.tokenizer.num_codes
        other_actions = actions.clone()
        other_actions[:, k] = (other_actions[:, k] + 1) % tiny.lam.num_actions  # acts on frame k+1
        for changed in (dyn(other_tokens, actions), dyn(tokens, other_actions)):
            assert torch.allclose(base[:, : k + 1], changed[:, : k + 1], atol=1e-6)
            assert not torch.allclose(base[:, k + 1], changed[:, k + 1])


def test_straight_through_gradients_reach_the_encoders(tiny):
    x = torch.rand(2, tiny.frames, 3, *tiny.resolution)
    tok = build(tiny, "tokenizer")
    ((tok(x).recon - x) ** 2).mean().backward()  # reconstruction only: no VQ loss term
    assert tok.embed.weight.grad.abs().sum() > 0 and tok.encoder.blocks[0].ffn.up.weight.grad.abs().sum() > 0
    lam = build(tiny, "lam")
    ((lam(x).recon - x[:, 1:]) ** 2).mean().backward()
    assert lam.embed.weight.grad.abs().sum() > 0 and lam.action_token.grad.abs().sum() > 0


def test_mask_tokens_keeps_the_first_frame_and_respects_rates():
    tokens = torch.randint(0, 10, (64, 4, 50))
    masked, mask = mask_tokens(tokens, 10, 0.5, 1.0, torch.Generator().manual_seed(0))
    assert not mask[:, 0].any()
    rate = mask[:, 1:].float().mean(dim=(1, 2))
    assert rate.min() > 0.4 and rate.max() <= 1.0 and 0.65 < rate.mean() < 0.85
    assert (masked[mask] == 10).all() and (masked[~mask] == tokens[~mask]).all()


def test_vq_reports_usage_and_restarts_dead_codes():
    from genie_robot.models.vq import VectorQuantizer

    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4, usage_decay=0.5)
    z = torch.randn(1, 1, 4).expand(32, 8, 4).contiguous()  # every vector the same: collapse
    out = vq(z)
    assert out.perplexity.item() == pytest.approx(1.0, abs=1e-4)
    for _ in range(10):
        vq(z)
    # Dead codes were re-seeded next to the batch's vectors, so usage recovers instead of staying at 1/16.
    assert (vq.ema_usage >= vq.dead_fraction / 16).all()


def test_resolution_not_divisible_by_patch_is_a_clear_error(tiny):
    bad = model_config("tiny")
    bad.resolution = [18, 20]
    with pytest.raises(ValueError, match=r"18x20 is not divisible by tokenizer.patch=4"):
        build(bad, "tokenizer")



def test_flop_formula_matches_torch_flop_counter(tiny):
    from torch.utils.flop_counter import FlopCounterMode

    from genie_robot.models.flops import dynamics_forward_flops, generated_frame_flops

    dyn = build(tiny, "dynamics").eval()
    tokens = torch.randint(0, tiny.tokenizer.num_codes, (1, tiny.frames, tiny.tokens_per_frame()))
    actions = torch.zeros(1, tiny.frames - 1, dtype=torch.long)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # The math backend runs attention as plain matmuls, which the counter sees on a CPU.
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        dyn(tokens, actions)
    assert counter.get_total_flops() == pytest.approx(dynamics_forward_flops(tiny, tiny.frames, skip_masked=False),
                                                      rel=0.01)
    gen = generated_frame_flops(tiny, maskgit_steps=8)
    assert gen["cached"] < gen["uncached"]
