"""The torch imagination engine: cached MaskGIT equals the plain recompute, seeded, with clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from genie_robot.config import config_dir, typed
from genie_robot.core.maskgit import MASK, sample_step, still_masked
from genie_robot.inference.world_model import Limits, WorldModel
from genie_robot.models import ModelConfig, build


@pytest.fixture(scope="module")
def engine() -> WorldModel:
    """The tiny config with random weights in float64 (sampling equality must not hinge on rounding)."""
    with initialize_config_dir(config_dir=str(config_dir() / "model"), version_base="1.3"):
        cfg = typed(compose(config_name="tiny"), ModelConfig)
    torch.manual_seed(0)
    parts = {c: build(cfg, c).double() for c in ("tokenizer", "lam", "dynamics")}
    return WorldModel(cfg, parts["tokenizer"], parts["dynamics"], lam=parts["lam"], limits=Limits(8, 12))


def frames(engine: WorldModel, t: int, seed: int = 0) -> np.ndarray:
    h, w = engine.cfg.resolution
    return np.random.default_rng(seed).integers(0, 256, (t, 3, h, w), dtype=np.uint8)


def test_cosine_schedule_unmasks_everything_by_the_last_step():
    counts = [still_masked(i, 25, 320) for i in range(25)]
    assert counts[-1] == 0 and all(a >= b for a, b in zip(counts, counts[1:], strict=False)) and counts[0] < 320


def test_sample_step_keeps_known_tokens_and_follows_the_schedule():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 10, 7)).astype(np.float32)
    cur = np.full((2, 10), MASK)
    for i in range(4):
        nxt = sample_step(logits, cur, i, 4, 1.0, rng)
        assert ((cur == MASK) | (nxt == cur)).all()  # decided tokens never change
        assert (nxt == MASK).sum(1).tolist() == [still_masked(i, 4, 10)] * 2
        cur = nxt
    assert ((cur >= 0) & (cur < 7)).all()



@pytest.mark.parametrize("vocab", [7, 1024, 8192])
def test_the_two_level_draw_is_the_plain_inverse_cdf(vocab):
    """`draw` (float32, blocks) picks the token a float64 cumulative sum over the whole row picks,
    with the same log-probability, for peaked and flat rows alike."""
    from genie_robot.core.maskgit import draw

    rng = np.random.default_rng(vocab)
    z = (rng.standard_normal((3000, vocab)) * rng.choice([0.1, 1.0, 8.0], (3000, 1))).astype(np.float32)
    u = rng.random(3000)
    p = np.exp(z.astype(np.float64) - z.max(axis=1, keepdims=True))
    cdf = np.cumsum(p, axis=1)
    expected = np.minimum((cdf < u[:, None] * cdf[:, -1:]).sum(axis=1), vocab - 1)
    ids, logp = draw(z.copy(), u)
    assert (ids == expected).mean() >= 0.999  # a u within float32 rounding of a boundary may differ
    np.testing.assert_allclose(logp, np.log(p[np.arange(3000), ids] / cdf[:, -1]), atol=1e-5)
    assert ((ids >= 0) & (ids < vocab)).all()

@pytest.mark.parametrize(("batch", "horizon", "context"), [(1, 2, 1), (3, 3, 2), (2, 6, 4), (4, 5, 7)])
def test_cached_sampling_gives_the_plain_paths_tokens(engine, batch, horizon, context):
    ctx = frames(engine, context)
    actions = np.random.default_rng(1).integers(0, engine.cfg.lam.num_actions, (batch, horizon))
    cached = engine.imagine(ctx, actions, steps=6, temperature=2.0, seed=7)
    plain = engine.imagine(ctx, actions, steps=6, temperature=2.0, seed=7, cached=False)
    assert cached.tokens.shape == (batch, horizon, engine.cfg.tokens_per_frame())
    assert cached.frames.shape == (batch, horizon, 3, *engine.cfg.resolution) and cached.frames.dtype == np.uint8
    np.testing.assert_array_equal(cached.tokens, plain.tokens)
    np.testing.assert_array_equal(cached.frames, plain.frames)


def test_the_compiled_engine_samples_the_eager_tokens_and_compiles_once_per_shape(engine):
    """`WorldModel.compile` (a frame's MaskGIT steps sampled inside one compiled call, or one call per step when a
    hook runs between them): the same tokens as the eager engine's numpy sampler for the same draws (float64: no
    rounding flips a draw), across window slides; once a batch size and step count has run, no position, slide,
    seed or temperature recompiles."""
    import copy

    compiled = copy.deepcopy(engine).compile()
    ctx = frames(engine, 3)
    actions = np.random.default_rng(2).integers(0, engine.cfg.lam.num_actions, (3, engine.cfg.frames + 2))
    for batch in (1, 3):  # the first calls at each batch size compile (context at batch 1, candidates at 3)
        compiled.imagine(ctx, actions[:batch], steps=5, temperature=1.0, seed=0)
        compiled.imagine(ctx, actions[:batch], steps=5, temperature=1.0, seed=0, before_step=lambda h, i: None)
    with torch.compiler.set_stance("fail_on_recompile"):
        for batch in (1, 3):
            eager = engine.imagine(ctx, actions[:batch], steps=5, temperature=2.0, seed=4)
            fast = compiled.imagine(ctx, actions[:batch], steps=5, temperature=2.0, seed=4)
            stepped = compiled.imagine(ctx, actions[:batch], steps=5, temperature=2.0, seed=4,
                                       before_step=lambda h, i: None)
            np.testing.assert_array_equal(fast.tokens, eager.tokens)
            np.testing.assert_array_equal(fast.frames, eager.frames)
            np.testing.assert_array_equal(stepped.tokens, eager.tokens)


def test_compiling_adds_a_linear_layers_bias_in_the_next_kernel_inside_a_loop_too():
    """`inductor.BiasIntoNextKernel` rewrites `addmm` to `mm` + bias where every use is element-wise (the first
    layer, which GELU follows), not where the result leaves the graph (the second), inside a `while_loop`'s body
    as the MaskGIT frame has them; the compiled loop computes what the eager one does."""
    from torch._higher_order_ops import while_loop

    from genie_robot.inference.inductor import OPTIONS

    torch.manual_seed(0)
    ffn = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 16)).double()

    def three_times(x):
        return while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, ffn(y)), (torch.zeros((), dtype=torch.long), x))[1]

    x = torch.randn(5, 16, dtype=torch.float64)
    bias_pass, options = OPTIONS["post_grad_custom_post_pass"], {**OPTIONS, "cpp_wrapper": False}
    before = bias_pass.rewritten
    with torch.no_grad(), torch._inductor.config.patch(fx_graph_cache=False):
        out = torch.compile(three_times, fullgraph=True, options=options)(x)
        expected = ffn(ffn(ffn(x)))
    assert bias_pass.rewritten - before == 1
    torch.testing.assert_close(out, expected)


def test_sampling_on_the_device_draws_what_the_numpy_sampler_draws():
    """genie_robot.models.sampling, step by step and a whole frame in one call, against `maskgit.sample_step` on
    the same logits and uniforms: the same tokens, and the schedule leaves what `keep_schedule` says."""
    from genie_robot.core.maskgit import BLOCK, keep_schedule
    from genie_robot.models import sampling

    rng = np.random.default_rng(0)
    b, s, v, steps = 3, 40, 256, 7
    logits = (rng.standard_normal((steps, b, s, v)) * 3).astype(np.float32)
    u = rng.random((steps, b, s))
    keep = keep_schedule(steps, s)
    mask_id, inv_t = v, torch.tensor(np.float32(1 / 0.7))
    cur, ids = np.full((b, s), MASK), torch.full((b, s), mask_id)
    for i in range(steps):
        cur = sample_step(logits[i], cur, i, steps, 0.7, GivenUniforms(u[i]))
        ids = sampling.step(torch.from_numpy(logits[i]), ids, mask_id, torch.from_numpy(u[i]), torch.tensor(keep[i]),
                            inv_t, BLOCK)
        assert (cur == MASK).sum(1).tolist() == [keep[i]] * b
        np.testing.assert_array_equal(np.where(ids.numpy() == mask_id, MASK, ids.numpy()), cur)
    calls = iter(torch.from_numpy(logits))
    frame = sampling.frame(lambda ids: next(calls), mask_id, torch.from_numpy(u), torch.tensor(keep), inv_t, BLOCK)
    np.testing.assert_array_equal(frame.numpy(), cur)
    assert keep[-1] == 0 and (cur >= 0).all()


class GivenUniforms:
    """A stand-in for numpy's Generator that hands out given uniforms (so both samplers read the same ones)."""

    def __init__(self, u: np.ndarray):
        self.u = u

    def random(self, shape):
        assert tuple(shape) == self.u.shape
        return self.u


def test_an_engine_sampling_on_its_device_gives_the_numpy_samplers_tokens(engine, monkeypatch):
    """The GPU path (`DeviceSampledDynamics`, eager here), with and without a hook between the steps."""
    from genie_robot.inference.world_model import DeviceSampledDynamics

    ctx = frames(engine, 4)
    actions = np.random.default_rng(5).integers(0, engine.cfg.lam.num_actions, (2, engine.cfg.frames + 1))
    expected = engine.imagine(ctx, actions, steps=6, temperature=1.5, seed=2).tokens
    monkeypatch.setattr(engine, "_backend", lambda: DeviceSampledDynamics(engine.dynamics, engine.device,
                                                                          engine.dtype))
    hook_calls = []
    np.testing.assert_array_equal(engine.imagine(ctx, actions, steps=6, temperature=1.5, seed=2).tokens, expected)
    stepped = engine.imagine(ctx, actions, steps=6, temperature=1.5, seed=2,
                             before_step=lambda h, i: hook_calls.append((h, i)))
    np.testing.assert_array_equal(stepped.tokens, expected)
    assert hook_calls == [(h, i) for h in range(actions.shape[1]) for i in range(6)]


@pytest.mark.parametrize("conditioning", ["input", "film", "prepend"])
def test_prefill_builds_the_cache_that_appending_frame_by_frame_builds(conditioning):
    from genie_robot.models.dynamics import write_cache

    with initialize_config_dir(config_dir=str(config_dir() / "model"), version_base="1.3"):
        cfg = typed(compose(config_name="tiny", overrides=[f"dynamics.action_conditioning={conditioning}"]),
                    ModelConfig)
    torch.manual_seed(1)
    model = build(cfg, "dynamics").double().eval()
    rng = np.random.default_rng(3)
    tokens = torch.from_numpy(rng.integers(0, model.vocab, (2, cfg.frames - 1, cfg.tokens_per_frame())))
    actions = torch.from_numpy(rng.integers(0, cfg.lam.num_actions, (2, cfg.frames - 2)))
    with torch.no_grad():
        k, v = model.prefill(tokens, actions)
        ck, cv = model.empty_cache(2, torch.device("cpu"), torch.float64)
        for j in range(tokens.shape[1]):
            act = torch.full((2,), -1) if j == 0 else actions[:, j - 1]
            _, nk, nv = model.step(tokens[:, j], act, j, ck, cv)
            ck, cv = write_cache(ck, nk, j, in_place=True), write_cache(cv, nv, j, in_place=True)
    torch.testing.assert_close(k, ck)
    torch.testing.assert_close(v, cv)


def test_the_same_seed_repeats_and_another_seed_differs(engine):
    ctx, actions = frames(engine, 3), np.array([[0, 1, 2], [3, 4, 5]])
    a = engine.imagine(ctx, actions, steps=4, seed=3)
    b = engine.imagine(ctx, actions, steps=4, rng=np.random.default_rng(3))
    c = engine.imagine(ctx, actions, steps=4, seed=4)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)


def test_actions_tokens_and_frames_round_trip_shapes(engine):
    video = frames(engine, 9)
    acts = engine.infer_actions(video)
    assert acts.shape == (8,) and acts.dtype == np.int64 and acts.max() < engine.cfg.lam.num_actions
    # Overlapping windows: the first window's actions are the ones a single window gives.
    np.testing.assert_array_equal(acts[:3], engine.infer_actions(video[:4]))
    tokens = engine.encode(video)
    assert tokens.shape == (9, engine.cfg.tokens_per_frame())
    assert engine.decode(tokens).shape == video.shape


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"context": np.zeros((2, 3, 8, 8), np.uint8)}, r"context must be \[T, 3, 16, 20\]"),
    ({"context": np.zeros((2, 1, 16, 20), np.uint8)}, r"context must be"),
    ({"context": np.full((2, 3, 16, 20), 2.0, np.float32)}, r"float context must be finite and in \[0, 1\]"),
    ({"latent_actions": [[0, 8]]}, r"ids must be in \[0, 8\)"),
    ({"latent_actions": [[0.5, 1.0]]}, r"latent_actions must be integer ids"),
    ({"latent_actions": np.zeros((9, 2), int)}, r"exceed the limits \(8 candidates, 12 steps\)"),
    ({"latent_actions": np.zeros((1, 13), int)}, r"exceed the limits"),
    ({"temperature": 0.0}, r"temperature must be a finite number > 0"),
    ({"temperature": float("nan")}, r"temperature must be a finite number > 0"),
    ({"steps": 0}, r"maskgit steps must be a positive integer"),
    ({"context_actions": [1]}, r"context_actions has 1 ids; the context needs 2"),
])
def test_bad_requests_are_clear_errors(engine, kwargs, message):
    call = {"context": frames(engine, 3), "latent_actions": [[0, 1]], **kwargs}
    with pytest.raises(ValueError, match=message):
        engine.imagine(call.pop("context"), call.pop("latent_actions"), **call)


def test_a_model_without_a_lam_says_so_when_a_call_needs_it(engine):
    no_lam = WorldModel(engine.cfg, engine.tokenizer, engine.dynamics, lam=None, source="/runs/x")
    with pytest.raises(Exception, match=r"needs the latent action model, and /runs/x has no LAM"):
        no_lam.infer_actions(frames(engine, 3))
    # A single context frame or given context actions need no LAM.
    no_lam.imagine(frames(engine, 1), [[1, 2]], steps=2, seed=0)
    no_lam.imagine(frames(engine, 3), [[1, 2]], steps=2, seed=0, context_actions=[4, 5])


def test_fit_image_crops_the_centre_and_resizes(tmp_path):
    from PIL import Image

    from genie_robot.core.image import fit_image

    # A 100x300 picture: the centred 100x125 crop (aspect 4:5) is red, the sides blue.
    img = np.zeros((100, 300, 3), np.uint8)
    img[:, :, 2] = 255
    img[:, 87:212] = [255, 0, 0]
    Image.fromarray(img).save(tmp_path / "p.png")
    out = fit_image(tmp_path / "p.png", (16, 20))
    assert out.shape == (3, 16, 20) and out.dtype == np.uint8
    assert out[0].min() >= 250 and out[2].max() <= 5  # only the red centre survives
    assert fit_image(img[:, :, 0], (16, 20)).shape == (3, 16, 20)  # greyscale too
    with pytest.raises(ValueError, match="not a readable image"):
        (tmp_path / "bad.png").write_bytes(b"nope")
        fit_image(tmp_path / "bad.png", (16, 20))
    with pytest.raises(ValueError, match="uint8 HxW, HxWx3 or HxWx4"):
        fit_image(np.zeros((4, 4, 2), np.uint8), (16, 20))


def test_world_model_loads_a_trained_run_and_the_imagine_cli_writes_a_gif(trained, tmp_path):
    import imageio.v3 as iio
    from PIL import Image

    from genie_robot.cli import main

    run = trained / "train/tiny"
    engine = WorldModel.load(run)
    assert engine.lam is not None and engine.cfg.name == "tiny"
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (123, 77, 3), dtype=np.uint8)).save(photo)
    gif = tmp_path / "out.gif"
    assert main(["imagine", "model=tiny", f"ckpt={run}", f"prompt={photo}", "actions=0,3,3,5",
                 "imagine.steps=3", f"imagine.out={gif}", "imagine.scale=2"]) == 0
    frames = iio.imread(gif, index=None)
    assert frames.shape == (5, 32, 40, 3)  # the prompt, then one frame per action
    assert main(["imagine", "model=tiny", f"ckpt={run}", f"prompt={photo}", "actions=0,9"]) == 1


def test_loading_names_what_is_missing_or_mismatched(trained, tmp_path):
    import shutil

    from genie_robot.checkpoint import CheckpointError
    from genie_robot.core.engine import EngineError

    with pytest.raises(CheckpointError, match="holds no dynamics checkpoint"):
        WorldModel.load(trained / "train/tiny/tokenizer")
    run = tmp_path / "run"
    shutil.copytree(trained / "train/tiny", run)
    shutil.rmtree(run / "lam")
    with pytest.raises(EngineError, match="has no LAM"):
        WorldModel.load(run).infer_actions(np.zeros((3, 3, 16, 20), np.uint8))
    # A tokenizer with other weights than the one the dynamics model was trained on.
    tok = next((run / "tokenizer/checkpoints").iterdir())
    from safetensors.torch import load_file, save_file

    weights = load_file(tok / "model.safetensors")
    save_file({k: v + 1 for k, v in weights.items()}, tok / "model.safetensors")
    with pytest.raises(CheckpointError, match="trained on another tokenizer"):
        WorldModel.load(run)


def test_cem_plan_shapes_progress_and_determinism(engine):
    from genie_robot.planning.cem import goal_cost, plan, random_search

    ctx = frames(engine, 2)
    goal = frames(engine, 1, seed=5)[0]
    seen = []
    result = plan(engine, ctx, goal, horizon=3, num_samples=8, iterations=3, seed=1, steps=3,
                  progress=lambda it, c: seen.append((it, c)))
    assert result.actions.shape == (3,) and result.frames.shape == (3, 3, *engine.cfg.resolution)
    assert [it for it, _ in seen] == [1, 2, 3]
    best = [c for _, c in seen]
    assert all(a >= b for a, b in zip(best, best[1:], strict=False)) and result.cost == best[-1]
    # The reported cost is the cost of the returned frames.
    tokens = engine.encode(result.frames[-1:])  # only used by the token cost
    assert result.cost == pytest.approx(float(goal_cost(engine, result.frames[-1:], tokens, goal, None, "pixel")[0]))
    again = plan(engine, ctx, goal, horizon=3, num_samples=8, iterations=3, seed=1, steps=3)
    np.testing.assert_array_equal(again.actions, result.actions)
    token = plan(engine, ctx, goal, horizon=2, num_samples=4, iterations=2, seed=1, steps=2, cost="token")
    assert np.isfinite(token.cost) and result.robot_actions is None
    assert np.isfinite(random_search(engine, ctx, goal, horizon=3, budget=10, batch=4, steps=2))


def recording(engine, asked: list) -> type:
    """An engine class that is the real `engine` but records each batch of candidates it is asked to imagine."""

    class Recording:
        cfg, adapter, temperature = engine.cfg, None, engine.temperature

        def imagine(self, context, seqs, **kw):
            asked.append(np.asarray(seqs).copy())
            return engine.imagine(context, seqs, **kw)

        def encode(self, frames):
            return engine.encode(frames)

    return Recording


def test_cem_never_imagines_a_sequence_twice_and_stops_asking_when_all_are_seen(engine):
    """Each candidate costs a rollout: CEM draws only sequences it has not imagined yet, and when the
    whole space is seen (horizon 1: 8 sequences) later iterations imagine nothing and keep the best."""
    from genie_robot.planning.cem import plan

    asked = []
    Recording = recording(engine, asked)
    ctx, goal = frames(engine, 2), frames(engine, 1, seed=5)[0]
    plan(Recording(), ctx, goal, horizon=2, num_samples=8, iterations=3, seed=0, steps=2)
    rows = [tuple(r) for batch in asked for r in batch]
    assert len(rows) == 24 and len(set(rows)) == 24
    asked.clear()
    result = plan(Recording(), ctx, goal, horizon=1, num_samples=5, iterations=3, seed=0, steps=2)
    assert [len(b) for b in asked] == [5, 3] and len({int(r[0]) for b in asked for r in b}) == 8
    assert [h["candidates"] for h in result.history] == [5, 3, 0] and np.isfinite(result.cost)


def test_cem_stratifies_each_step_so_every_action_is_tried(engine):
    """Latin hypercube draws: under a uniform distribution each action appears equally often at every step
    of a batch (8 candidates, 8 actions: once each), where independent draws leave some out; concentrated
    distributions still give new, distinct sequences."""
    from genie_robot.planning.cem import plan

    asked = []
    Recording = recording(engine, asked)
    ctx, goal = frames(engine, 2), frames(engine, 1, seed=5)[0]
    plan(Recording(), ctx, goal, horizon=3, num_samples=8, iterations=3, seed=4, steps=2, stratified=True)
    assert all(np.bincount(asked[0][:, t], minlength=8).tolist() == [1] * 8 for t in range(3))
    rows = [tuple(r) for batch in asked for r in batch]
    assert len(rows) == 24 and len(set(rows)) == 24
    asked.clear()
    plan(Recording(), ctx, goal, horizon=3, num_samples=8, iterations=1, seed=4, steps=2, stratified=False)
    assert any(np.bincount(asked[0][:, t], minlength=8).min() == 0 for t in range(3))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"goal_image": np.zeros((3, 8, 8), np.uint8)}, r"goal image must be uint8 \[3, 16, 20\]"),
    ({"horizon": 0}, r"horizon must be a positive integer"),
    ({"cost": "l1"}, r"plan cost must be one of"),
    ({"elite_fraction": 0.0}, r"elite_fraction must be in"),
    ({"temperature": -1.0}, r"temperature must be a finite number > 0"),
    ({"num_samples": 9}, r"exceed the limits \(8 candidates"),
])
def test_bad_plan_requests_are_clear_errors(engine, kwargs, message):
    from genie_robot.planning.cem import plan

    call = {"goal_image": frames(engine, 1)[0], "horizon": 2, "num_samples": 4, "iterations": 1, "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        plan(engine, frames(engine, 2), **call)


def test_prefill_of_a_model_without_temporal_attention_says_what_cached_sampling_needs():
    with initialize_config_dir(config_dir=str(config_dir() / "model"), version_base="1.3"):
        cfg = typed(compose(config_name="tiny", overrides=["dynamics.transformer.attention=spatial"]), ModelConfig)
    model = build(cfg, "dynamics").eval()
    tokens = torch.zeros((1, 2, cfg.tokens_per_frame()), dtype=torch.long)
    with pytest.raises(ValueError, match="cached sampling needs the 'st' layout, this model uses 'spatial'"):
        model.prefill(tokens, torch.zeros((1, 1), dtype=torch.long))
