"""Dynamics model: a decoder-only MaskGIT transformer over video tokens and latent actions.

Input: tokens z_1..z_T (masked ones replaced by a learned mask token) with the latent
action a_t's embedding added to every token of frame t+1 (added, not concatenated, as in
the paper). The causal ST-transformer lets frame t see frames <= t, so one forward predicts
every masked token of every frame from the past and the actions. With
`action_conditioning: film` the action also scales and shifts frame t+1's input to every
block (FiLM, zero-initialized), as the LAM's decoder does. With `action_conditioning: prepend`
the action is instead one extra token at the front of the frame it leads to (Jasmine, arXiv
2510.27002: prepending, not adding, made its CoinRun rollouts follow the actions): every token of
the frame reads it through spatial attention, and none carries it mixed into its own embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genie_robot.models import sampling
from genie_robot.models.config import MASKINGS, DynamicsConfig
from genie_robot.models.st_transformer import FiLM, PositionEmbedding, STTransformer


class DynamicsModel(nn.Module):
    def __init__(self, cfg: DynamicsConfig, frames: int, tokens_per_frame: int, vocab: int, num_actions: int,
                 code_dim: int = 32):
        super().__init__()
        d = cfg.transformer.d_model
        self.vocab, self.mask_id = vocab, vocab
        self.frames, self.tokens_per_frame, self.num_actions = frames, tokens_per_frame, num_actions
        self.embed = nn.Embedding(vocab + 1, d)  # the extra id is MASK
        # Prepending gives every frame an action token; the window's first frame has no action and
        # gets a learned "none" one (the extra id), so every frame has the same layout.
        self.prepend = cfg.action_conditioning == "prepend"
        self.action_embed = nn.Embedding(num_actions + self.prepend, d)
        # Rows per frame in the transformer and in the sampling cache: the tokens, plus the action's.
        self.rows = tokens_per_frame + self.prepend
        self.pos = PositionEmbedding(frames, self.rows, d)
        self.transformer = STTransformer(cfg.transformer)
        # MaskGIT's output layer: logits against the token embeddings themselves (tied) plus a bias.
        # A frame mostly repeats the last one's tokens; with tied weights an output that carries the
        # previous token's embedding already scores that token, so copying needs no learning and
        # training goes to what changes. (With an untied head the demo model stayed below a
        # copy-the-last-frame baseline after its CPU budget.)
        # `target: code_vector`: the output is a direction in the tokenizer's code space, scored against
        # the tokenizer's own (unit) codes, a buffer set from the tokenizer before training and saved
        # with the weights, so inference and the exported graphs need nothing else.
        self.code_scale = cfg.code_logit_scale
        self.to_group = None
        if cfg.target == "code_vector":
            self.to_code = nn.Linear(d, code_dim)
            self.register_buffer("codes", torch.zeros(vocab, code_dim))
            self.head_bias = None
            if cfg.code_groups:  # each code's group, the codes in group order, the groups' mean codes (set_codes)
                self.group_scale = cfg.code_group_scale
                self.to_group = nn.Linear(d, cfg.code_groups)  # zero: p(group) starts as the regression's choice
                nn.init.zeros_(self.to_group.weight)
                nn.init.zeros_(self.to_group.bias)
                self.register_buffer("code_group", torch.zeros(vocab, dtype=torch.long))
                self.register_buffer("group_order", torch.arange(vocab))
                self.register_buffer("group_means", torch.zeros(cfg.code_groups, code_dim))
            else:
                self.code_group = self.group_order = self.group_means = None
        else:
            self.to_code, self.codes = None, None
            self.code_group = self.group_order = self.group_means = None
            self.head_bias = nn.Parameter(torch.zeros(vocab))
        # Zero-initialized: training starts from Genie's additive conditioning.
        self.film = FiLM(d, cfg.transformer) if cfg.action_conditioning == "film" else None

    def _film(self, act_XD: torch.Tensor, present_X: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        return self.film.blocks(act_XD, present_X) if self.film is not None else None

    @torch.no_grad()
    def init_embeddings_from(self, codebook_VC: torch.Tensor, seed: int = 0, share: float = 1.0) -> None:
        """Token embeddings from the tokenizer's codes: e_i = sqrt(D) * P c_i, P a random orthonormal map.

        `share` < 1 keeps part of each embedding random: e_i = sqrt(D) * (sqrt(share) P c_i +
        sqrt(1 - share) r_i), r_i a random unit vector, so neighbouring codes start alike but
        distinguishable (with share 1 the nearest codes' embeddings are at cosine 0.985, and
        exact copying has to be learned back; docs/MODELS.md).

        With `target: code_vector` the output map starts as P's transpose, so a token passed through
        unchanged is read out as its own code (the model starts by copying, in code space).

        The output layer is tied to these embeddings, so the logits start as cosine similarities
        between an output direction and every code: moving probability to the codes that look
        like the right one is then a smooth move of one vector, not 8,192 separate logits. The
        norm matches the default N(0, 1) init's (sqrt(D)); the MASK embedding stays random.
        """
        vocab, code_dim = codebook_VC.shape
        d = self.embed.embedding_dim
        if vocab != self.vocab or code_dim > d:
            raise ValueError(f"a codebook of {vocab} x {code_dim} cannot initialize {self.vocab} embeddings of {d}")
        if not 0.0 < share <= 1.0:
            raise ValueError(f"the codebook's share of the embeddings must be in (0, 1], got {share}")
        gen = torch.Generator().manual_seed(seed)
        proj, _ = torch.linalg.qr(torch.randn(d, code_dim, generator=gen))  # [D, C], orthonormal columns
        codes = F.normalize(codebook_VC.detach().float().cpu(), dim=-1)
        own = F.normalize(torch.randn(vocab, d, generator=gen), dim=-1)
        mixed = share**0.5 * codes @ proj.T + (1 - share) ** 0.5 * own
        self.embed.weight[: self.vocab] = (mixed * d**0.5).to(self.embed.weight)
        if self.to_code is not None:  # target code_vector: read the code back out of the same map
            self.to_code.weight.copy_(proj.T.to(self.to_code.weight))
            self.to_code.bias.zero_()

    @torch.no_grad()
    def set_codes(self, codebook_VC: torch.Tensor) -> None:
        """The tokenizer's codes that `target: code_vector` outputs are scored against (unit length).

        With `code_groups` also each code's group (`balanced_groups`: equal sizes, alike codes together)."""
        if self.codes is None:
            raise ValueError("set_codes is for model.dynamics.target=code_vector")
        if codebook_VC.shape != self.codes.shape:
            raise ValueError(f"a codebook of {tuple(codebook_VC.shape)} does not fit this model's "
                             f"{tuple(self.codes.shape)} (tokenizer.num_codes x tokenizer.code_dim)")
        self.codes.copy_(F.normalize(codebook_VC.detach().float(), dim=-1))
        if self.code_group is not None:
            self.code_group.copy_(balanced_groups(self.codes, self.to_group.out_features))
            self.group_order.copy_(self.code_group.argsort(stable=True))
            self.group_means.copy_(F.normalize(torch.zeros_like(self.group_means).index_add_(
                0, self.code_group, self.codes), dim=-1))

    def code_vectors(self, h: torch.Tensor) -> torch.Tensor:
        """Unit code-space directions [..., code_dim] of transformer outputs h [..., D] (target code_vector)."""
        return F.normalize(self.to_code(h), dim=-1)

    def group_logits(self, h: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """`code_groups`: logits [..., groups] of p(group): code_group_scale x the cosine between the
        regression's output and each group's mean code (the regression's own choice, which a mean
        between two groups blurs), plus a learned term that can pick one of them instead.

        Both read the transformer's outputs detached: its cross-entropy trains only `to_group`. Trained
        into the transformer too, it outweighed the regression there (cosine loss 0.10 -> 0.43 within
        200 steps from sim-rt1's weights, and the groups' loss rose with it; docs/MODELS.md)."""
        return self.group_scale * F.linear(vectors.detach(), self.group_means) + self.to_group(h.detach())

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits [..., vocab] of transformer outputs h [..., D]."""
        if self.codes is not None:
            vectors = self.code_vectors(h)
            logits = F.linear(vectors, self.codes * self.code_scale)
            if self.to_group is None:
                return logits
            # code_groups: p(code) = p(group) * softmax over the group's codes of the scaled cosines. The
            # groups are equal and contiguous in group_order, so each one's normalizer is a log-sum-exp
            # over a reshape (no scatter: the exported graph is gathers and reductions).
            within = logits[..., self.group_order].unflatten(-1, (self.to_group.out_features, -1)).logsumexp(-1)
            return logits + (self.group_logits(h, vectors).log_softmax(-1) - within)[..., self.code_group]
        # Scale the D-wide input, not the vocab-wide logits, and let the matmul add the bias: the same
        # numbers without two extra passes over a [tokens, vocab] tensor (half a CPU step otherwise).
        return F.linear(h * h.shape[-1] ** -0.5, self.embed.weight[: self.vocab], self.head_bias)

    def forward(self, tokens_BTS: torch.Tensor, actions_BT1: torch.Tensor,
                where_BTS: torch.Tensor | None = None,
                vectors: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [B, T, S, vocab]; actions_BT1[:, t] is the action from frame t to t+1.

        `where_BTS` (boolean, optional): logits only at those positions, [N, vocab] in their
        row-major order. Training scores only the masked tokens, and with a large vocabulary the
        output layer over every position is most of a step's work (8,192 codes x 320 tokens a
        frame), so it is skipped where no loss is taken. `vectors` (target code_vector): instead of
        logits, what its loss needs: the unit code-space outputs [..., code_dim] and, with
        `code_groups`, the groups' logits [..., groups] (else None).
        """
        h = self._hidden(tokens_BTS, actions_BT1)
        h = h if where_BTS is None else h[where_BTS]
        if not vectors:
            return self.head(h)
        vectors = self.code_vectors(h)
        return vectors, None if self.to_group is None else self.group_logits(h, vectors)

    def _hidden(self, tokens_BTS: torch.Tensor, actions_BT1: torch.Tensor, kv: list | None = None) -> torch.Tensor:
        """The transformer's outputs [B, T, S, D] of every frame's tokens (`kv`: gets each layer's temporal keys
        and values)."""
        x = self.embed(tokens_BTS)
        if self.prepend:
            none = torch.full_like(actions_BT1[:, :1], self.num_actions)
            act = self.action_embed(torch.cat([none, actions_BT1], dim=1))  # [B, T, D]
            return self.transformer(self.pos(torch.cat([act[:, :, None], x], dim=2)), kv=kv)[:, :, 1:]
        act = self.action_embed(actions_BT1)  # [B, T-1, D]
        x = torch.cat([x[:, :1], x[:, 1:] + act[:, :, None]], dim=1)
        # The first frame has no action: no modulation (the actions' embeddings padded with a zero row).
        film = self._film(F.pad(act, (0, 0, 1, 0)), F.pad(torch.ones_like(actions_BT1, dtype=torch.bool), (1, 0)))
        return self.transformer(self.pos(x), film, kv)

    def prefill(self, tokens_BTS: torch.Tensor, actions_BT1: torch.Tensor, slots_outer: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """A sampling cache ([layers, B*rows, heads, window, head_dim] keys and values, as `empty_cache`, in its
        `slots_outer` storage) holding frames 0..T-1 in slots 0..T-1: one forward over the frames instead of T
        cached steps. Equal to appending them one by one (temporal attention is causal, so a frame's keys and
        values do not see later ones)."""
        b, t = tokens_BTS.shape[:2]
        # First, so a layout without temporal keys and values gets empty_cache's error.
        cache_k, cache_v = self.empty_cache(b, tokens_BTS.device, self.embed.weight.dtype, slots_outer)
        kv: list = []
        self._hidden(tokens_BTS, actions_BT1, kv)
        cache_k[..., :t, :] = torch.stack([k for k, _ in kv])
        cache_v[..., :t, :] = torch.stack([v for _, v in kv])
        return cache_k, cache_v

    def step(self, tokens_BS: torch.Tensor, action_B: torch.Tensor | None, t: int | torch.Tensor,
             cache_k: torch.Tensor, cache_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits [B, S, vocab] of one frame at window position t, given the earlier frames' cache.

        `action_B` is the action that leads into this frame: None, or negative entries
        (genie_robot.core.rollout.NO_ACTION), for the window's first frame, which has
        none (a sentinel as well as None, so one exported graph serves every position). The
        cache (`empty_cache`: [layers, B*rows, heads, window, head_dim]) holds every layer's temporal
        keys/values of frames 0..t-1 in slots 0..t-1; slots from t on are ignored. Returns the logits
        and this frame's keys/values [layers, B*rows, heads, 1, head_dim], which `write_cache` puts in
        slot t once the frame is final. So a MaskGIT step costs one frame, not t+1, and has the same
        shapes at every position when `t` is a 0-d tensor (one compiled or exported graph for all of them;
        an int reads only the filled slots). With
        `prepend` the cache has a row per frame for the action token too (`rows`).
        """
        h, k, v = self._step_hidden(tokens_BS, action_B, t, cache_k, cache_v)
        return self.head(h), k, v

    def frame_kv(self, tokens_BS: torch.Tensor, action_B: torch.Tensor | None, t: int | torch.Tensor,
                 cache_k: torch.Tensor, cache_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A finished frame's keys and values for the cache: `step` without its logits. Compiled, what only the
        logits need (the output layer, the last block's feed-forward) is left out of the graph."""
        return self._step_hidden(tokens_BS, action_B, t, cache_k, cache_v)[1:]

    def _step_hidden(self, tokens_BS: torch.Tensor, action_B: torch.Tensor | None, t: int | torch.Tensor,
                     cache_k: torch.Tensor, cache_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`step`'s transformer outputs [B, S, D] of the frame's tokens, and its keys and values."""
        if isinstance(t, int):  # eager: only the t filled slots (a view), so a short past costs less
            cache_k, cache_v = cache_k[..., :t, :], cache_v[..., :t, :]
        valid = torch.arange(cache_k.shape[3], device=cache_k.device) < t
        x = self.embed(tokens_BS)
        if self.prepend:
            if action_B is None:
                action_B = torch.full(tokens_BS.shape[:1], -1, dtype=torch.long, device=tokens_BS.device)
            act = self.action_embed(torch.where(action_B >= 0, action_B, self.num_actions))
            h, k, v = self.transformer.step(self.pos.at(torch.cat([act[:, None], x], dim=1), t), cache_k, cache_v,
                                            valid)
            return h[:, 1:], k, v
        film = None
        if action_B is not None:
            present = action_B >= 0
            act = self.action_embed(action_B.clamp(min=0))
            x = x + torch.where(present[:, None, None], act[:, None, :], torch.zeros_like(act[:, None, :]))
            film = self._film(act, present)
        return self.transformer.step(self.pos.at(x, t), cache_k, cache_v, valid, film)

    def maskgit_step(self, ids_BS: torch.Tensor, action_B: torch.Tensor | None, t: int | torch.Tensor,
                     cache_k: torch.Tensor, cache_v: torch.Tensor, u_BS: torch.Tensor, keep: torch.Tensor,
                     inv_temperature: torch.Tensor, block: int) -> torch.Tensor:
        """One MaskGIT step of the frame at window position t, sampled here (`sampling.step`): new ids [B, S]
        (`mask_id` where still masked) from the current ones, the step's uniforms and how many stay masked."""
        logits = self.step(ids_BS, action_B, t, cache_k, cache_v)[0]
        return sampling.step(logits, ids_BS, self.mask_id, u_BS, keep, inv_temperature, block)

    def maskgit_frame(self, action_B: torch.Tensor | None, t: int | torch.Tensor, cache_k: torch.Tensor,
                      cache_v: torch.Tensor, u_NBS: torch.Tensor, keep_N: torch.Tensor, inv_temperature: torch.Tensor,
                      block: int) -> torch.Tensor:
        """The frame at window position t by every MaskGIT step in one call (`sampling.frame`): ids [B, S]."""
        return sampling.frame(lambda ids: self.step(ids, action_B, t, cache_k, cache_v)[0], self.mask_id, u_NBS,
                              keep_N, inv_temperature, block)

    def empty_cache(self, batch: int, device: torch.device, dtype: torch.dtype, slots_outer: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of a window with no frames yet: [layers, batch*rows, heads, window, head_dim] each.

        `slots_outer`: the same shape, stored with the window's slots outermost ([layers, window, batch*rows,
        heads, head_dim] in memory, seen through a permutation). Each frame's keys are then one block, and a step
        that reads the first t slots reads t blocks whole. Stored the other way, each token's slots are
        interleaved with the unread ones, whose cache lines the CPU fetches alongside (`cpu_kernels`' cached
        attention reads any strides; torch's matmuls would copy such a view, so the eager engine keeps the
        plain layout)."""
        cfg = self.transformer.cfg
        if cfg.attention != "st":
            raise ValueError(f"cached sampling needs the 'st' layout, this model uses '{cfg.attention}'")
        heads = cfg.num_heads
        rows, dh = batch * self.rows, cfg.inner_dim // heads
        if slots_outer:
            shape = (cfg.num_layers, self.frames, rows, heads, dh)
            return tuple(torch.zeros(shape, device=device, dtype=dtype).permute(0, 2, 3, 1, 4) for _ in range(2))
        shape = (cfg.num_layers, rows, heads, self.frames, dh)
        return torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)


def repeat_cache(cache: torch.Tensor, batch: int) -> torch.Tensor:
    """A cache [layers, rows, heads, window, head_dim] of one sequence copied for `batch` candidates (rows tiled),
    in the storage it has (`empty_cache`'s `slots_outer` or not)."""
    if cache.stride(3) > cache.stride(1):  # slots outermost
        return cache.permute(0, 3, 1, 2, 4).repeat(1, 1, batch, 1, 1).permute(0, 2, 3, 1, 4)
    return cache.repeat(1, batch, 1, 1, 1)


def write_cache(cache: torch.Tensor, new: torch.Tensor, t: int | torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """The cache [..., window, head_dim] with slot t set to a finished frame's keys or values `new` [..., 1, head_dim].

    In place for the torch engine (the rollout hands a cache on and never reads the old one); otherwise a
    select, as an exported graph (which cannot write in place) computes it: once per frame, not per step.
    """
    if in_place:
        cache[..., t, :] = new[..., 0, :]
        return cache
    slot = torch.arange(cache.shape[-2], device=cache.device) == t
    return torch.where(slot[:, None], new, cache)


def balanced_groups(codes_VC: torch.Tensor, groups: int, rounds: int = 10) -> torch.Tensor:
    """Each code's group [V] (long): `groups` (a power of two dividing V) groups of equal size, alike codes together.

    Equal sizes let `DynamicsModel.head` normalize inside each group with a reshape. Start: the codes
    halved at the median of their principal direction, each half again, until there are `groups`.
    Then balanced k-means by cosine: each round every code goes to the most alike group mean that
    still has room, the most alike pairs first (on sim-rt1's codes this puts a code's nearest other
    code in its group 61% of the time instead of 49%, and a linear map of the codes finds their
    group for 91% of them instead of 79%: what `group_logits` has to do). Deterministic for a given
    codebook, and saved with the weights anyway."""
    vocab = len(codes_VC)
    if groups < 2 or groups & (groups - 1) or vocab % groups:
        raise ValueError(f"code groups must be a power of two that divides the {vocab} codes, got {groups}")
    x = F.normalize(codes_VC.detach().double().cpu(), dim=-1)
    parts = [torch.arange(vocab)]
    while len(parts) < groups:
        halves = []
        for idx in parts:
            centred = x[idx] - x[idx].mean(0)
            direction = torch.linalg.svd(centred, full_matrices=False).Vh[0]
            order = idx[(centred @ direction).argsort(stable=True)]
            halves += [order[: len(order) // 2], order[len(order) // 2:]]
        parts = halves
    labels = torch.empty(vocab, dtype=torch.long)
    for g, idx in enumerate(parts):
        labels[idx] = g
    size, near = vocab // groups, min(16, groups)
    for _ in range(rounds):
        sim = x @ F.normalize(torch.zeros(groups, x.shape[1], dtype=x.dtype).index_add_(0, labels, x), dim=-1).T
        best, candidates = sim.topk(near, dim=1)
        new = torch.full((vocab,), -1, dtype=torch.long)
        room = [size] * groups
        for pair in best.flatten().argsort(descending=True, stable=True).tolist():
            code, group = divmod(pair, near)
            g = int(candidates[code, group])
            if new[code] < 0 and room[g] > 0:
                new[code], room[g] = g, room[g] - 1
        for code in (new < 0).nonzero().flatten().tolist():  # its `near` groups were full: the most alike with room
            g = max((g for g in range(groups) if room[g] > 0), key=lambda g: float(sim[code, g]))
            new[code], room[g] = g, room[g] - 1
        moved = (new != labels).float().mean().item()
        labels = new
        if moved < 0.002:
            break
    return labels


def mask_tokens(tokens_BTS: torch.Tensor, mask_id: int, rate_min: float, rate_max: float,
                generator: torch.Generator | None = None, masking: str = "genie") -> tuple[torch.Tensor, torch.Tensor]:
    """The training mask, at a per-sample rate ~ U[rate_min, rate_max].

    "genie": frames 2..T masked at that rate (the paper's recipe). Every frame's context is then
    itself half to fully masked, while sampling predicts a frame after fully known ones.
    "clean_past": per sample, a first masked frame k (uniform over 2..T); frames before it stay
    whole, frames k..T are masked at that rate. Frame k is trained exactly as it is sampled (clean
    past, partly masked present); the later frames as in Genie's recipe.

    Returns (masked tokens, boolean mask of the positions to predict).
    """
    if masking not in MASKINGS:
        raise ValueError(f"masking must be one of {MASKINGS}, got '{masking}'")
    b, t = tokens_BTS.shape[:2]
    rate = torch.empty(b, 1, 1, device=tokens_BTS.device).uniform_(rate_min, rate_max, generator=generator)
    mask = torch.rand(tokens_BTS.shape, device=tokens_BTS.device, generator=generator) < rate
    mask[:, 0] = False  # the first frame is always context
    if masking == "clean_past" and t > 1:
        first = torch.randint(1, t, (b, 1), device=tokens_BTS.device, generator=generator)
        mask &= (torch.arange(t, device=tokens_BTS.device)[None] >= first)[:, :, None]
    return tokens_BTS.masked_fill(mask, mask_id), mask


def code_targets(codebook_VC: torch.Tensor, ids_N: torch.Tensor, temperature: float) -> torch.Tensor:
    """Soft training targets [N, V]: each code's weight falls with its cosine distance to the true one.

    The tokenizer's codes are dense in code space (on the sim-rt1 tokenizer, decoding every token
    as its nearest other code still gives 30 dB against the exact decode), so a one-hot target
    over 8,192 of them asks for one code among many that draw the same patch; where the arm
    moves, the dynamics then stayed at chance. Weights softmax(-(1 - cos) / temperature) keep the
    true code the most likely target and make its neighbours nearly right.
    """
    if temperature <= 0:
        raise ValueError(f"code target temperature must be > 0, got {temperature}")
    codes = F.normalize(codebook_VC.float(), dim=-1)
    distance = 1 - codes[ids_N] @ codes.T  # [N, V], 0 at the true code
    return F.softmax(-distance / temperature, dim=-1)


def token_loss(logits_NV: torch.Tensor, target_N: torch.Tensor, codebook_VC: torch.Tensor, smoothing: float,
               soft_N: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of the masked tokens' logits: one-hot targets, or `code_targets` where `soft_N`.

    `smoothing` 0 is Genie's one-hot loss everywhere. Otherwise the tokens where `soft_N` is true
    (every token when it is None) are scored against soft targets at that temperature and the rest
    against their exact code, each token weighing the same in the mean. One log-softmax serves
    both kinds, and soft targets are built only for the tokens that get them: one row is the whole
    vocabulary, so building them for every masked token would be a [tokens, 8,192] tensor per step
    where most rows stay one-hot.
    """
    if smoothing <= 0:
        return F.cross_entropy(logits_NV, target_N)
    if soft_N is None:
        return F.cross_entropy(logits_NV, code_targets(codebook_VC, target_N, smoothing))
    logp = logits_NV.log_softmax(-1)
    per_token = -logp.gather(1, target_N[:, None])[:, 0]
    if soft_N.any():
        per_token = per_token.masked_scatter(
            soft_N, -(code_targets(codebook_VC, target_N[soft_N], smoothing) * logp[soft_N]).sum(-1))
    return per_token.mean()


def code_vector_loss(vectors_NC: torch.Tensor, target_N: torch.Tensor, codes_VC: torch.Tensor) -> torch.Tensor:
    """`target: code_vector`: mean cosine distance between the outputs and the true tokens' (unit) codes.

    Its minimum is the mean direction of the codes that can appear at a position, not the most
    likely one: where the arm may or may not move in, a blend of arm and table that the action
    shifts, rather than the last frame's code (what cross-entropy over near-twin codes settled on).
    """
    return (1 - (vectors_NC * codes_VC[target_N]).sum(-1)).mean()
