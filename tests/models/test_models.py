"""Genie components: shapes, causality, gradients, and every config's parameter count."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from hydra import compose, initialize_config_dir

from genie_robot.config import config_dir, typed
from genie_robot.models import (
    COMPONENTS,
    ModelConfig,
    STConfig,
    STTransformer,
    build,
    code_targets,
    mask_tokens,
    token_loss,
)

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


def _dynamics(cfg, conditioning: str):
    """A dynamics model with the given action conditioning, its FiLM live (as after training).

    `conditioning` may end in "+code_vector": that output (target=code_vector), scored against random codes;
    "+code_vector+groups": with 4 code groups and a live categorical over them.
    """
    cfg = copy.deepcopy(cfg)
    cfg.dynamics.action_conditioning, *target = conditioning.split("+")
    cfg.dynamics.target = target[0] if target else "ids"
    cfg.dynamics.code_groups = 4 if "groups" in target else 0
    dyn = build(cfg, "dynamics").eval()
    if dyn.film is not None:
        torch.nn.init.normal_(dyn.film.weight, std=0.1)
    if dyn.codes is not None:
        dyn.set_codes(torch.randn(cfg.tokenizer.num_codes, cfg.tokenizer.code_dim))
    if dyn.to_group is not None:
        torch.nn.init.normal_(dyn.to_group.weight, std=0.5)
    return dyn


@pytest.mark.parametrize("conditioning", ["input", "film", "prepend", "input+code_vector", "film+code_vector+groups"])
def test_dynamics_logits_are_causal(tiny, conditioning):
    """The action of transition t changes the logits of frame t+1 and never those of frames <= t."""
    torch.manual_seed(0)
    dyn = _dynamics(tiny, conditioning)
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



@pytest.mark.parametrize("conditioning", ["input", "film", "prepend", "prepend+code_vector",
                                          "input+code_vector+groups"])
def test_dynamics_cached_step_equals_the_full_forward(tiny, conditioning):
    """Sampling runs `step` frame by frame on a window-sized key/value cache; each frame's logits must be
    the full forward's, the window's first frame (no action) included, whatever the unused slots hold
    (here noise), and the in-place write of the torch engine must equal the exported graphs' select."""
    from genie_robot.models.dynamics import write_cache

    torch.manual_seed(0)
    dyn = _dynamics(tiny, conditioning)
    b, t, s = 2, tiny.frames, tiny.tokens_per_frame()
    tokens = torch.randint(0, tiny.tokenizer.num_codes + 1, (b, t, s))
    actions = torch.randint(0, tiny.lam.num_actions, (b, t - 1))
    full = dyn(tokens, actions)
    k, v = (torch.randn_like(c) * 10 for c in dyn.empty_cache(b, torch.device("cpu"), torch.float32))
    assert k.shape[3] == tiny.frames
    with torch.no_grad():
        for i in range(t):
            action = torch.full((b,), -1) if i == 0 else actions[:, i - 1]
            logits, k_i, v_i = dyn.step(tokens[:, i], action, torch.tensor(i) if i % 2 else i, k, v)
            assert torch.allclose(logits, full[:, i], atol=1e-4), i
            selected = write_cache(k, k_i, i)
            k, v = write_cache(k.clone(), k_i, i, in_place=True), write_cache(v, v_i, i, in_place=True)
            assert torch.equal(selected, k)


@pytest.mark.parametrize("conditioning", ["input", "prepend"])
def test_dynamics_logits_at_chosen_positions_equal_the_full_logits_there(tiny, conditioning):
    """Training takes logits only at the masked positions; they must be the full forward's."""
    torch.manual_seed(0)
    dyn = _dynamics(tiny, conditioning)
    b, t, s = 3, tiny.frames, tiny.tokens_per_frame()
    tokens = torch.randint(0, tiny.tokenizer.num_codes, (b, t, s))
    actions = torch.randint(0, tiny.lam.num_actions, (b, t - 1))
    where = torch.rand(b, t, s) < 0.4
    picked = dyn(tokens, actions, where)
    assert picked.shape == (int(where.sum()), tiny.tokenizer.num_codes)
    assert torch.allclose(picked, dyn(tokens, actions)[where], atol=1e-5)

def test_code_vector_outputs_score_every_code_by_cosine_and_regress_to_the_mean(tiny):
    """target=code_vector: logits are scale * cosine(output, code), the loss a cosine distance, and
    the output that minimizes it over two equally likely codes is their mean direction (not either)."""
    from genie_robot.models import code_vector_loss

    torch.manual_seed(0)
    dyn = _dynamics(tiny, "input+code_vector")
    b, t, s = 2, tiny.frames, tiny.tokens_per_frame()
    tokens = torch.randint(0, tiny.tokenizer.num_codes, (b, t, s))
    actions = torch.randint(0, tiny.lam.num_actions, (b, t - 1))
    vectors, groups = dyn(tokens, actions, vectors=True)
    assert groups is None
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(b, t, s), atol=1e-5)
    assert torch.allclose(dyn(tokens, actions), 100.0 * vectors @ dyn.codes.T, atol=1e-4)
    a, c = dyn.codes[0], dyn.codes[1]
    mean = torch.nn.functional.normalize(a + c, dim=0)
    for other in (a, c, torch.nn.functional.normalize(a + 0.5 * c, dim=0)):
        both = lambda v: code_vector_loss(torch.stack([v, v]), torch.tensor([0, 1]), dyn.codes)  # noqa: E731
        assert both(mean) < both(other)
    with pytest.raises(ValueError, match="does not fit this model"):
        dyn.set_codes(torch.randn(3, tiny.tokenizer.code_dim))
    # embed_init=codebook: each token's embedding, read out by the output map, is its own code.
    dyn.init_embeddings_from(dyn.codes)
    read = dyn.code_vectors(dyn.embed.weight[: tiny.tokenizer.num_codes])
    assert torch.allclose(read, dyn.codes, atol=1e-5)


def test_code_groups_sample_a_group_by_its_categorical_then_a_code_by_cosine_inside_it(tiny):
    """code_groups: equal groups of alike codes; the head's distribution over codes has the categorical's
    group marginal, and inside a group it is the regression's softmax over the scaled cosines, so a
    pale mean between two groups no longer decides which group a sample lands in."""
    from genie_robot.models.dynamics import balanced_groups

    torch.manual_seed(0)
    dyn = _dynamics(tiny, "input+code_vector+groups")
    vocab = tiny.tokenizer.num_codes
    assert torch.equal(dyn.code_group.bincount(minlength=4), torch.full((4,), vocab // 4))
    assert torch.equal(dyn.code_group[dyn.group_order], torch.arange(4).repeat_interleave(vocab // 4))
    # Alike codes together: two tight clusters of codes are never split, whatever else is.
    centres = torch.randn(2, 8)
    codes = torch.cat([centres[0] + 0.01 * torch.randn(32, 8), centres[1] + 0.01 * torch.randn(32, 8)])
    labels = balanced_groups(codes, 2)
    assert len(labels[:32].unique()) == 1 and len(labels[32:].unique()) == 1 and labels[0] != labels[32]
    with torch.no_grad():
        torch.nn.init.normal_(dyn.to_group.bias, std=3.0)
    b, t, s = 2, tiny.frames, tiny.tokens_per_frame()
    tokens = torch.randint(0, vocab, (b, t, s))
    actions = torch.randint(0, tiny.lam.num_actions, (b, t - 1))
    where = torch.rand(b, t, s) < 0.5
    p = dyn(tokens, actions, where).softmax(-1)
    vectors, groups = dyn(tokens, actions, where, vectors=True)
    marginal = torch.zeros(len(p), 4).index_add_(1, dyn.code_group, p)
    assert torch.allclose(marginal, groups.softmax(-1), atol=1e-5)
    for g in range(4):
        inside = dyn.code_group == g
        cosines = 100.0 * vectors @ dyn.codes[inside].T
        assert torch.allclose(p[:, inside] / marginal[:, g:g + 1], cosines.softmax(-1), atol=1e-4)
    with pytest.raises(ValueError, match="power of two that divides"):
        balanced_groups(codes, 3)
    cfg = copy.deepcopy(tiny)
    cfg.dynamics.code_groups = 4
    with pytest.raises(ValueError, match="code_groups=4 needs target=code_vector"):
        cfg.validate()


def test_lam_actions_of_a_shorter_clip_match_the_full_window(tiny):
    torch.manual_seed(0)
    lam = build(tiny, "lam")
    x = torch.rand(6, tiny.frames, 3, *tiny.resolution)
    lam(x)  # one training forward: per-transition batch statistics reach the running averages
    lam.eval()
    with torch.no_grad():
        lam.pre_vq.bn.running_mean.add_(torch.randn_like(lam.pre_vq.bn.running_mean))  # index-specific stats
        full = lam.infer_actions(x)
        for k in range(2, tiny.frames):
            assert torch.equal(lam.infer_actions(x[:, :k]), full[:, : k - 1])
    with pytest.raises(ValueError, match="training needs clips of"):
        lam.train()(x[:, :3])


def test_lam_action_t_labels_the_transition_from_frame_t_to_t_plus_1(tiny):
    """The alignment the dynamics model relies on (its action t acts on frame t+1; p-doom/jasmine#122
    found an off-by-one that made latent actions useless): the LAM's code t depends on frames <= t+1
    only, and its decoder's prediction of frame t+1 on code t."""
    torch.manual_seed(0)
    lam = build(tiny, "lam")
    x = torch.rand(6, tiny.frames, 3, *tiny.resolution)
    lam(x)
    lam.eval()
    with torch.no_grad():
        full = lam(x)
        for k in range(1, tiny.frames):
            changed = x.clone()
            changed[:, k] = torch.rand_like(changed[:, k])
            assert torch.equal(lam.infer_actions(changed)[:, : k - 1], full.actions[:, : k - 1])
        # decode_ids with the inferred ids is exactly the forward pass's prediction
        assert torch.allclose(lam.decode_ids(x, full.actions), full.recon, atol=1e-6)
        for k in range(tiny.frames - 1):
            other = full.actions.clone()
            other[:, k] = (other[:, k] + 1) % tiny.lam.num_actions
            pred = lam.decode_ids(x, other)
            assert torch.allclose(pred[:, :k], full.recon[:, :k], atol=1e-6)
            assert not torch.allclose(pred[:, k], full.recon[:, k])


@pytest.mark.parametrize("conditioning", ["input", "film"])
def test_spatial_lam_decoder_sees_only_the_previous_frame(tiny, conditioning):
    """`lam.decoder.attention=spatial`: frame t+1 is predicted from frame t and action t alone, so
    the motion of earlier frames cannot stand in for the action."""
    torch.manual_seed(0)
    cfg = model_config("tiny")
    cfg.lam.decoder.attention, cfg.lam.action_conditioning = "spatial", conditioning
    cfg.validate()
    lam = build(cfg, "lam").eval()
    if lam.film is not None:
        torch.nn.init.normal_(lam.film.weight, std=0.1)  # as after training: the modulation is live
    x = torch.rand(2, cfg.frames, 3, *cfg.resolution)
    ids = torch.randint(0, cfg.lam.num_actions, (2, cfg.frames - 1))
    with torch.no_grad():
        base = lam.decode_ids(x, ids)
        earlier = x.clone()
        earlier[:, 0] = torch.rand_like(earlier[:, 0])
        assert torch.allclose(lam.decode_ids(earlier, ids)[:, 1:], base[:, 1:], atol=1e-6)
        other = ids.clone()
        other[:, -1] = (other[:, -1] + 1) % cfg.lam.num_actions
        assert not torch.allclose(lam.decode_ids(x, other)[:, -1], base[:, -1])


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


def test_clean_past_masking_keeps_every_frame_before_the_first_masked_one_whole():
    """`masking=clean_past`: frames before a per-sample first masked frame k are whole (as sampling
    sees its past), frames from k on are masked at the sample's rate, and k covers frames 2..T."""
    tokens = torch.randint(0, 10, (256, 5, 40))
    masked, mask = mask_tokens(tokens, 10, 0.5, 1.0, torch.Generator().manual_seed(0), masking="clean_past")
    assert not mask[:, 0].any() and (masked[~mask] == tokens[~mask]).all()
    frame_masked = mask.any(dim=2)  # [B, T]
    first = frame_masked.float().argmax(dim=1)
    for b in range(tokens.shape[0]):
        k = int(first[b])
        assert not frame_masked[b, :k].any() and frame_masked[b, k:].all()
        assert mask[b, k:].float().mean() > 0.35
    assert set(first.tolist()) == {1, 2, 3, 4}
    with pytest.raises(ValueError, match="masking must be one of"):
        mask_tokens(tokens, 10, 0.5, 1.0, masking="future")


def test_code_targets_weigh_codes_by_their_distance_to_the_true_one():
    """`code_smoothing`: the true code is the likeliest target, nearer codes weigh more, and the
    weights sum to one; a vanishing temperature is the one-hot target."""
    torch.manual_seed(0)
    codebook = torch.nn.functional.normalize(torch.randn(64, 8), dim=-1)
    ids = torch.tensor([3, 17, 40])
    q = code_targets(codebook, ids, 0.1)
    assert q.shape == (3, 64) and torch.allclose(q.sum(-1), torch.ones(3))
    assert (q.argmax(-1) == ids).all()
    cos = codebook[ids] @ codebook.T
    order = cos.argsort(dim=-1, descending=True)
    assert (q.gather(1, order).diff(dim=-1) <= 1e-7).all()  # weights fall with distance
    assert torch.equal(code_targets(codebook, ids, 1e-4).argmax(-1), ids)
    assert (code_targets(codebook, ids, 1e-4).gather(1, ids[:, None]) > 0.999).all()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        code_targets(codebook, ids, 0.0)


def test_token_loss_smooths_only_the_tokens_it_is_told_to():
    """`code_smoothing_tokens: changed`: one-hot cross-entropy where the code is copied, soft targets
    where it changes, each token weighing the same; smoothing 0 is Genie's loss whatever the mask."""
    torch.manual_seed(0)
    codebook = torch.nn.functional.normalize(torch.randn(64, 8), dim=-1)
    logits, target = torch.randn(6, 64), torch.tensor([3, 17, 40, 3, 9, 60])
    soft = torch.tensor([True, False, True, False, False, True])
    hard_ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    soft_ce = torch.nn.functional.cross_entropy(logits, code_targets(codebook, target, 0.1), reduction="none")
    assert torch.allclose(token_loss(logits, target, codebook, 0.1, soft), torch.where(soft, soft_ce, hard_ce).mean())
    assert torch.allclose(token_loss(logits, target, codebook, 0.1), soft_ce.mean())
    assert torch.allclose(token_loss(logits, target, codebook, 0.0, soft), hard_ce.mean())
    for only in (torch.zeros(6, dtype=torch.bool), torch.ones(6, dtype=torch.bool)):  # one side empty
        expected = torch.where(only, soft_ce, hard_ce).mean()
        assert torch.allclose(token_loss(logits, target, codebook, 0.1, only), expected)
    with pytest.raises(ValueError, match="code_smoothing_tokens must be one of"):
        cfg = model_config("tiny")
        cfg.dynamics.code_smoothing_tokens = "moving"
        cfg.validate()


def test_codebook_embedding_init_keeps_the_codes_geometry(tiny):
    """`embed_init: codebook`: the (tied) token embeddings are the codes through an orthonormal map,
    so two codes' embeddings are as similar as the codes, and their norm is the default init's."""
    model = build(tiny, "dynamics")
    vocab, d = model.vocab, model.embed.embedding_dim
    codebook = torch.randn(vocab, 4)
    model.init_embeddings_from(codebook)
    e = model.embed.weight[:vocab].detach()
    unit = torch.nn.functional.normalize(codebook, dim=-1)
    assert torch.allclose(e @ e.T / d, unit @ unit.T, atol=1e-5)
    assert torch.allclose(e.norm(dim=-1), torch.full((vocab,), d**0.5), atol=1e-4)
    with pytest.raises(ValueError, match="cannot initialize"):
        model.init_embeddings_from(torch.randn(vocab + 1, 4))
    # `mixed`: half the codes' geometry, half random, at the same norm
    model.init_embeddings_from(codebook, share=0.5)
    e = model.embed.weight[:vocab].detach()
    off = ~torch.eye(vocab, dtype=torch.bool)
    assert torch.allclose(e.norm(dim=-1), torch.full((vocab,), d**0.5), rtol=0.3)
    assert ((e @ e.T / d)[off] - 0.5 * (unit @ unit.T)[off]).abs().mean() < 0.25
    with pytest.raises(ValueError, match="share"):
        model.init_embeddings_from(codebook, share=0.0)


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


def test_euclidean_vq_gives_the_origin_a_code_of_its_own(tiny):
    """model.lam.quantizer=vq_euclidean: latents whose length is the motion's size (a cluster at the origin
    for "no motion", 7 directions around it) get one code per cluster; matched by cosine, the origin's
    vectors have no direction of their own and scatter over the direction codes."""
    from genie_robot.models.vq import VectorQuantizer

    torch.manual_seed(0)
    axes = torch.cat([torch.eye(3), -torch.eye(3), torch.ones(1, 3) / 3**0.5])
    centers = torch.cat([torch.zeros(1, 3), 2.0 * axes])
    z = centers.repeat_interleave(64, 0) + 0.1 * torch.randn(512, 3)
    truth = torch.arange(8).repeat_interleave(64)
    for normalize in (True, False):
        vq = VectorQuantizer(8, 3, normalize=normalize).eval()
        vq.initialized.fill_(True)
        with torch.no_grad():
            vq.codebook.copy_(vq._unit(centers))
        ids = vq.quantize(z)
        origin_codes = ids[truth == 0].unique().numel()
        assert (origin_codes == 1) != normalize, (normalize, origin_codes)
        if not normalize:
            assert torch.equal(ids, truth) and torch.equal(vq.lookup(ids), centers[truth])
    lam = build(dataclasses.replace(tiny, lam=dataclasses.replace(tiny.lam, quantizer="vq_euclidean", code_dim=3)),
                "lam")
    assert not lam.vq.normalize and build(tiny, "lam").vq.normalize
    with pytest.raises(ValueError, match=r"model.lam.quantizer must be one of \('vq', 'vq_euclidean', 'fsq'\)"):
        dataclasses.replace(tiny, lam=dataclasses.replace(tiny.lam, quantizer="vq_l1")).validate()


def test_binary_fsq_codes_the_sign_of_each_dimension_and_uses_every_code(tiny):
    """model.lam.quantizer=fsq (TinyWorlds): code id = the latent's signs read as bits; a standardized
    batch reaches all 8 codes with no codebook; gradients reach the encoder; a size that is not
    2**code_dim is refused."""
    from genie_robot.models.vq import BinaryFSQ

    fsq = BinaryFSQ(8, 3)
    ids = torch.arange(8)
    assert torch.equal(fsq.quantize(fsq.lookup(ids)), ids)
    assert torch.equal(fsq.lookup(torch.tensor(5)), torch.tensor([1.0, -1.0, 1.0]))
    z = torch.randn(256, 3, requires_grad=True)
    out = fsq(z)
    assert out.perplexity.item() > 7.5 and torch.equal(out.z_q.detach(), fsq.lookup(out.indices))
    out.z_q.sum().backward()
    assert (z.grad != 0).all()
    assert out.loss.item() == 0.0
    # model.lam.fsq_margin_weight: a hinge on each dimension's distance from its boundary, which only pulls
    # dimensions within 1 of it outward (to their own side), never across.
    z = torch.tensor([[0.2, -1.5, -0.4]], requires_grad=True)
    out = BinaryFSQ(8, 3, margin_weight=0.3)(z)
    assert out.loss.item() == pytest.approx(0.3 * (0.8 + 0.0 + 0.6) / 3)
    out.loss.backward()
    assert z.grad[0, 0] < 0 and z.grad[0, 1] == 0 and z.grad[0, 2] > 0
    with pytest.raises(ValueError, match="fsq_margin_weight must be >= 0 and needs model.lam.quantizer=fsq"):
        dataclasses.replace(tiny, lam=dataclasses.replace(tiny.lam, fsq_margin_weight=0.1)).validate()
    with pytest.raises(ValueError, match=r"num_actions must be 2\*\*model.lam.code_dim, got 8 codes and code_dim 8"):
        dataclasses.replace(tiny, lam=dataclasses.replace(tiny.lam, quantizer="fsq")).validate()
    cfg = dataclasses.replace(tiny, lam=dataclasses.replace(tiny.lam, quantizer="fsq", code_dim=3))
    lam = build(cfg, "lam")
    torch.manual_seed(0)
    x = torch.rand(16, cfg.frames, 3, *cfg.resolution)
    out = lam(x)
    assert out.actions.unique().numel() >= 6  # batch-standardized signs: no collapse at initialization
    out.recon.mean().backward()
    assert lam.to_code.weight.grad.abs().sum() > 0


def test_vq_entropy_penalty_spreads_a_collapsed_codebook():
    from genie_robot.models.vq import VectorQuantizer

    torch.manual_seed(0)
    # 8 clusters of inputs inside one cone around u; code 0 sits at u, the other codes far off,
    # so every input picks code 0 and the unused codes get no codebook-loss gradient at all.
    u = torch.nn.functional.normalize(torch.randn(16), dim=0)
    centers = torch.nn.functional.normalize(u + 0.25 * torch.randn(8, 16), dim=-1)
    z = centers.repeat_interleave(32, 0) + 0.02 * torch.randn(256, 16)
    used = {}
    for weight in (0.0, 1.0):
        vq = VectorQuantizer(8, 16, entropy_weight=weight, dead_fraction=0.0)
        vq.initialized.fill_(True)
        with torch.no_grad():
            vq.codebook.copy_(torch.nn.functional.normalize(torch.randn(8, 16), dim=-1))
            vq.codebook[0] = u
        opt = torch.optim.Adam(vq.parameters(), lr=0.05)
        for _ in range(100):
            opt.zero_grad()
            vq(z).loss.backward()
            opt.step()
        used[weight] = vq.eval()(z).indices.unique().numel()
    # Codebook/commitment losses alone keep everything on code 0; the entropy penalty pulls the
    # idle codes in until each cluster has its own.
    assert used[0.0] == 1 and used[1.0] >= 7, used


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


def _entropy_worker(rank: int, port: int, z: torch.Tensor, codebook: torch.Tensor, out: str) -> None:
    import os

    import torch.distributed as dist

    from genie_robot.models.vq import VectorQuantizer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    vq = VectorQuantizer(8, 16, entropy_weight=1.0)
    vq.codebook.data.copy_(codebook)
    vq._entropy_penalty(z.chunk(2)[rank]).backward()
    dist.all_reduce(vq.codebook.grad)  # what DDP does: average the ranks' gradients
    if rank == 0:
        torch.save(vq.codebook.grad / 2, out)
    dist.destroy_process_group()


def test_vq_entropy_penalty_under_two_processes_matches_one(tmp_path):
    import socket

    import torch.multiprocessing as mp

    from genie_robot.models.vq import VectorQuantizer

    torch.manual_seed(0)
    z, codebook = torch.randn(64, 16), torch.randn(8, 16)
    vq = VectorQuantizer(8, 16, entropy_weight=1.0)
    vq.codebook.data.copy_(codebook)
    vq._entropy_penalty(z).backward()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_entropy_worker, args=(port, z, codebook, str(tmp_path / "grad.pt")), nprocs=2)
    # The batch-mean assignment is all-reduced with autograd, so the halves see the global batch.
    assert torch.allclose(torch.load(tmp_path / "grad.pt", weights_only=True), vq.codebook.grad, atol=1e-6)


@pytest.mark.parametrize("layout", ["st", "spatial", "full"])
def test_the_transformer_at_one_position_gives_its_full_output_there_and_the_same_gradients(layout):
    """`STTransformer.forward(at=)` (what the LAM's encoder runs: only its action token's outputs are read) equals
    the whole output at that position, and so do the inputs' gradients."""
    from genie_robot.models.config import STConfig
    from genie_robot.models.st_transformer import STTransformer

    torch.manual_seed(0)
    model = STTransformer(STConfig(d_model=32, num_layers=2, num_heads=2, head_dim=None, ffn_mult=2.0,
                                   attention=layout))
    x = torch.randn(2, 5, 9, 32, requires_grad=True)
    full = model(x)[:, :, 3:4]
    (grad_full,) = torch.autograd.grad(full.sum(), x)
    one = model(x, at=3)
    (grad_one,) = torch.autograd.grad(one.sum(), x)
    assert one.shape == (2, 5, 1, 32)
    torch.testing.assert_close(one, full, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(grad_one, grad_full, atol=2e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="a cache"):
        model(x, kv=[], at=3)


def test_a_slots_outer_cache_holds_the_same_keys_stored_with_each_frame_as_one_block(tiny):
    """`empty_cache(slots_outer=True)` (the compiled CPU engine's): the same shape, the window's slots outermost
    in memory; a prefill into it and its copies for candidates (`repeat_cache`) hold the plain cache's values."""
    from genie_robot.models.dynamics import repeat_cache

    torch.manual_seed(0)
    dyn = _dynamics(tiny, "input")
    tokens = torch.randint(0, tiny.tokenizer.num_codes, (1, 3, tiny.tokens_per_frame()))
    actions = torch.randint(0, tiny.lam.num_actions, (1, 2))
    with torch.no_grad():
        plain, outer = dyn.prefill(tokens, actions), dyn.prefill(tokens, actions, slots_outer=True)
    for p, o in zip(plain, outer, strict=True):
        assert o.shape == p.shape and o.permute(0, 3, 1, 2, 4).is_contiguous() and p.is_contiguous()
        assert torch.equal(o, p)
        copies, plain_copies = repeat_cache(o, 3), repeat_cache(p, 3)
        assert copies.permute(0, 3, 1, 2, 4).is_contiguous() and torch.equal(copies, plain_copies)
