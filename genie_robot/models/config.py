"""Typed configs for the three Genie components, and the registry of sizes in configs/model/.

Only the top-level model takes a `ModelConfig`; sub-modules take the pieces they need. This
module imports no torch: the onnxruntime engine reads the same config from an export manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass(frozen=True)
class Sampling:
    """MaskGIT's sampling defaults: the one place the engines, the planner, eval, the ROS node's parameters and
    the CLI's configs (`${sampling:steps}`) read them.

    `steps` and `temperature` are Genie's (25 steps, temperature 2): an `imagine` call's, eval's and the model
    card's. Serving and planning take fewer steps: on sim-rt1's held-out clips, PSNR and ΔtPSNR at t=4 were
    flat from 2 to 25 steps with the fourth release (within 0.05 dB at the card's temperature), rose as the
    steps fell with the fifth (ΔtPSNR +2.50 dB at 25, +2.81 at 8, +3.04 at 4), and with the sixth, the shipped
    one, ΔtPSNR is flat from 2 to 8 steps (+2.74 to +2.76 dB) and +2.39 at 25, while the time grows about
    linearly with the steps (docs/BENCHMARKS.md, "Quality per MaskGIT step").
    - `serve_steps` (8): what the ROS node's rollouts and `genie-robot play` take by default. Not 2 or 4, to
      leave room for a model whose head is less sharp than sim-rt1's.
    - `plan_steps` (4): what CEM (`planning.cem`) and the node's plans take by default: a planner asks for
      many candidates per decision, and 4 steps cost about a sixth of 25 with no measured loss.
    """

    steps: int = 25
    temperature: float = 2.0
    serve_steps: int = 8
    plan_steps: int = 4


SAMPLING = Sampling()
# The dynamics model's training masks (genie_robot.models.dynamics.mask_tokens).
MASKINGS = ("genie", "clean_past")
LAM_QUANTIZERS = ("vq", "vq_euclidean", "fsq")
# The dynamics model's initial token embeddings: the tokenizer codes' share of each one
# (genie_robot.models.dynamics.DynamicsModel.init_embeddings_from); 0 leaves the random init.
EMBED_INITS = {"random": 0.0, "codebook": 1.0, "mixed": 0.5}
# Which masked tokens get soft targets when code_smoothing > 0 (genie_robot.models.dynamics.token_loss).
SMOOTHED_TOKENS = ("all", "changed")
DYNAMICS_TARGETS = ("ids", "code_vector")


@dataclass
class STConfig:
    """Width and depth of one ST-transformer."""

    d_model: int = 256
    num_layers: int = 4
    num_heads: int = 4
    head_dim: int | None = None  # None: d_model // num_heads
    ffn_mult: float = 4.0
    attention: str = "st"  # st | spatial | full

    @property
    def inner_dim(self) -> int:
        return self.num_heads * (self.head_dim or self.d_model // self.num_heads)

    @property
    def ffn_dim(self) -> int:
        return max(8, int(round(self.ffn_mult * self.d_model / 8)) * 8)

    def validate(self, where: str) -> None:
        if self.attention not in ("st", "spatial", "full"):
            raise ValueError(f"{where}.attention must be st, spatial or full, got '{self.attention}'")
        if self.head_dim is None and self.d_model % self.num_heads:
            raise ValueError(
                f"{where}: d_model {self.d_model} is not divisible by num_heads {self.num_heads}; set head_dim")


@dataclass
class TokenizerConfig:
    patch: int = 4
    num_codes: int = 1024
    code_dim: int = 32
    encoder: STConfig = field(default_factory=STConfig)
    decoder: STConfig = field(default_factory=STConfig)


@dataclass
class LAMConfig:
    input: str = "pixels"  # pixels | tokens (the paper's ablation: LAM over tokenizer tokens)
    patch: int = 16
    num_actions: int = 8
    code_dim: int = 32
    # Weight of the VQ's entropy penalty (genie_robot.models.vq): keeps all actions in use.
    entropy_weight: float = 0.0
    # How the decoder hears the action: "input" adds it to every decoder input token (Genie);
    # "film" also scales and shifts the input of every decoder block (TinyWorlds' FiLM), so no
    # layer can drop it. Which frames the decoder sees is `decoder.attention`: "st" (Genie: all
    # earlier frames, causal) or "spatial" (only the frame before the prediction, as in LAPA and
    # Wayfarer, so the past motion cannot stand in for the action).
    action_conditioning: str = "input"
    # Reconstruction weight on pixels that change between the two frames (MaskLAM's idea of
    # weighting the agent): w = 1 + change_weight * |x_t+1 - x_t| / mean |x_t+1 - x_t| (per frame).
    change_weight: float = 0.0
    # r > 0: each transition's squared error divided by (its own mean squared frame change + r x the batch's
    # mean), weights normalized to mean 1: small motions' directions weigh as much as large ones' (docs/MODELS.md).
    relative_loss: float = 0.0
    # What the encoder reads per frame: "frames" (Genie) or "frames_and_difference", which adds
    # each frame's difference from the one before (CoMo's [F_t, F_t+1 - F_t]): motion is then
    # in the input instead of something the encoder must first learn to compute.
    encoder_input: str = "frames"
    # How the decoder's output becomes pixels (pixel input): "pixels" (Genie: a sigmoid of the
    # output), "logit_residual" (a sigmoid around the previous frame in logit space: copying costs
    # nothing, but white or black pixels, the arm and its shadow, sit where the sigmoid is flat,
    # so moving them learns slowly) or "residual" (the previous frame plus the output).
    decoder_output: str = "logit_residual"
    # "vq": a learned codebook of num_actions vectors, matched by cosine (Genie); "vq_euclidean": the same
    # matched by Euclidean distance, so a code near the origin could name "no motion" (on the sim data its
    # latent collapsed onto one line; docs/MODELS.md, "Six LAM recipes"); "fsq": the sign of each of the
    # log2(num_actions) = code_dim latent dimensions (TinyWorlds' FSQ, 2 levels; genie_robot.models.vq).
    quantizer: str = "vq"
    # quantizer=fsq: weight of a hinge mean(relu(1 - |z|)) on the standardized latent, which pushes every
    # dimension at least 1 from its boundary at 0, meant to move a cluster of alike transitions (the arm still)
    # that a boundary splits over two codes to one side; at 0.1 it collapsed the codes onto two (docs/MODELS.md).
    fsq_margin_weight: float = 0.0
    # > num_actions: the quantizer has this many codes, merged into num_actions actions by what the LAM's
    # decoder draws for each (codes that predict the same next frame become one action; rare codes join their
    # nearest). The codes are trained as a LAM of quantizer_codes actions, then merged by
    # scripts/merge_actions.py, which writes this LAM (genie_robot.models.vq.MergedCodes; docs/MODELS.md).
    # 0: no merging, one code per action.
    quantizer_codes: int = 0
    encoder: STConfig = field(default_factory=STConfig)
    decoder: STConfig = field(default_factory=STConfig)

    def codes_config(self) -> dict:
        """The fields that decide which code a transition gets (what a dynamics model depends on);
        the decoder's fields and the training-only ones are left out."""
        return {"input": self.input, "patch": self.patch, "num_actions": self.num_actions,
                "code_dim": self.code_dim, "encoder_input": self.encoder_input, "quantizer": self.quantizer,
                "encoder": self.encoder} | ({"quantizer_codes": self.quantizer_codes} if self.quantizer_codes else {})


@dataclass
class DynamicsConfig:
    transformer: STConfig = field(default_factory=STConfig)
    # How the latent action reaches the frame it leads to: "input" adds its embedding to every
    # token of that frame (Genie); "film" also scales and shifts that frame's input to every block
    # (zero-initialized, so it starts as "input"), the change that made the LAM's decoder use its
    # action (docs/MODELS.md), so no layer can drop it; "prepend" puts it in front of that frame's
    # tokens as a token of its own (Jasmine, arXiv 2510.27002), which every token reads by attention.
    action_conditioning: str = "input"
    # Training mask (genie_robot.models.dynamics.mask_tokens): "genie" masks frames 2..T at one rate,
    # so every context is itself masked; "clean_past" keeps the frames before a random first masked
    # frame whole, as sampling sees them.
    masking: str = "genie"
    mask_rate_min: float = 0.5  # per-sample Bernoulli mask rate ~ U[min, max] on frames 2..T
    mask_rate_max: float = 1.0
    # Training targets (genie_robot.models.dynamics.code_targets): 0 scores only the exact code
    # (Genie's one-hot cross-entropy); > 0 spreads each target over the tokenizer's codes by
    # softmax(-cosine distance / code_smoothing), so a code next to the right one counts as nearly
    # right. With 8,192 codes the tokens where the arm moves were otherwise at chance (docs/MODELS.md).
    code_smoothing: float = 0.0
    # Where those soft targets apply: "all" masked tokens, or only the "changed" ones (whose code
    # differs from the same position's in the frame before). Smoothing everywhere also blurred the
    # tokens that should be copied exactly (exact accuracy 0.57 -> 0.18, blocky rollouts); "changed"
    # keeps their one-hot target and gives soft ones only where the arm moves.
    code_smoothing_tokens: str = "all"
    # Initial token embeddings (tied to the output layer): "random" (normal, Genie's); "codebook",
    # the tokenizer's code vectors through a fixed random projection, so codes that draw alike start
    # alike in the input and in the logits; "mixed", half codebook and half random, so they also
    # start distinguishable (DynamicsModel.init_embeddings_from).
    embed_init: str = "random"
    # Targets from the LAM's decoder (genie_robot.training.stages.DynamicsStage): the share of
    # training clips whose first masked frame k is scored against the tokens of the LAM decoder's
    # prediction of frame k from real frame k-1 and the inferred action, instead of the real frame
    # k. 0 is Genie's recipe (real frames only). The real next frame is one of many the same
    # action allows and the dynamics copied the last frame under any action; the decoder's
    # prediction is what the action implies. Measured on sim-rt1 it did not change that within 400
    # fine-tuning steps (docs/MODELS.md); kept selectable. Needs masking=clean_past.
    lam_teacher: float = 0.0
    # What the dynamics is trained to output per masked token: "ids" (Genie: a distribution over the
    # codes, cross-entropy against the true one) or "code_vector": the tokenizer's code vector of the
    # true token, by cosine regression, with logits = code_logit_scale * cosine(output, each code).
    # Cross-entropy's best guess is the most likely code, and with 8,192 near-twin codes that is the
    # last frame's wherever the arm may move; a regression's best guess is the mean of what may
    # appear there (as the LAM decoder's pixel loss is), which the action can move (docs/MODELS.md).
    target: str = "ids"
    code_logit_scale: float = 100.0
    # target=code_vector: > 0 (a power of two dividing the codes) splits the codes into that many equal
    # groups of alike ones and makes p(code) = p(group) * softmax of the scaled cosines inside the
    # group, p(group) a categorical trained by cross-entropy of the true token's group. A regression's
    # mean of "arm here" and "table here" is a pale blend whose nearest code draws a fading ghost arm;
    # the categorical lets a sample pick one of the two, as Genie's over codes does, and the
    # regression picks the code inside the group (DynamicsModel.head; docs/MODELS.md). 0: regression alone.
    code_groups: int = 0
    # code_groups: p(group)'s logits start as this x the cosine between the regression's output and each
    # group's mean code (DynamicsModel.group_logits). 10: the scale at which that choice's
    # cross-entropy against the true tokens' groups was lowest for the regression-only sim-rt1 on its
    # training data (3.93 nats; 4.05 at 5, 4.53 at 20, 6.65 at 40).
    code_group_scale: float = 10.0


@dataclass
class ModelConfig:
    name: str = "tiny"
    frames: int = 16  # context window (frames per clip)
    resolution: list[int] = field(default_factory=lambda: [64, 80])  # [H, W]
    channels: int = 3
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    lam: LAMConfig = field(default_factory=LAMConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    # The named size of each part (the paper's figure), checked by the parameter-count test.
    named_params: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """The inverse of `to_dict` (a manifest's or checkpoint's plain dict); unknown keys are an error."""
        return _from_dict(cls, d, "model")

    def to_dict(self) -> dict:
        return asdict(self)

    def tokens_per_frame(self) -> int:
        h, w = self.resolution
        return (h // self.tokenizer.patch) * (w // self.tokenizer.patch)

    def validate(self) -> None:
        h, w = self.resolution
        for part, patch in (("tokenizer", self.tokenizer.patch), ("lam", self.lam.patch)):
            if h % patch or w % patch:
                raise ValueError(
                    f"model '{self.name}': resolution {h}x{w} is not divisible by {part}.patch={patch}; "
                    f"choose H and W that are multiples of {patch} (data.resolution and model.resolution)")
        if self.lam.input not in ("pixels", "tokens"):
            raise ValueError(f"model.lam.input must be 'pixels' or 'tokens', got '{self.lam.input}'")
        if self.lam.action_conditioning not in ("input", "film"):
            raise ValueError(
                f"model.lam.action_conditioning must be 'input' or 'film', got '{self.lam.action_conditioning}'")
        if self.dynamics.action_conditioning not in ("input", "film", "prepend"):
            raise ValueError("model.dynamics.action_conditioning must be 'input', 'film' or 'prepend', got "
                             f"'{self.dynamics.action_conditioning}'")
        if self.dynamics.masking not in MASKINGS:
            raise ValueError(f"model.dynamics.masking must be one of {MASKINGS}, got '{self.dynamics.masking}'")
        if self.lam.quantizer not in LAM_QUANTIZERS:
            raise ValueError(f"model.lam.quantizer must be one of {LAM_QUANTIZERS}, got '{self.lam.quantizer}'")
        if self.lam.quantizer_codes and self.lam.quantizer_codes <= self.lam.num_actions:
            raise ValueError(f"model.lam.quantizer_codes must be 0 (one code per action) or more than model.lam."
                             f"num_actions ({self.lam.num_actions}) to merge, got {self.lam.quantizer_codes}")
        codes = self.lam.quantizer_codes or self.lam.num_actions
        if self.lam.quantizer == "fsq" and codes != 2**self.lam.code_dim:
            what = "model.lam.quantizer_codes" if self.lam.quantizer_codes else "model.lam.num_actions"
            raise ValueError(f"model.lam.quantizer=fsq codes the sign of each latent dimension: {what} must be "
                             f"2**model.lam.code_dim, got {codes} codes and code_dim {self.lam.code_dim} (8 codes: "
                             f"code_dim 3; 16: code_dim 4)")
        if self.lam.encoder_input not in ("frames", "frames_and_difference"):
            raise ValueError(f"model.lam.encoder_input must be 'frames' or 'frames_and_difference', got "
                             f"'{self.lam.encoder_input}'")
        if self.lam.decoder_output not in ("pixels", "logit_residual", "residual"):
            raise ValueError(f"model.lam.decoder_output must be 'pixels', 'logit_residual' or 'residual', got "
                             f"'{self.lam.decoder_output}'")
        if self.lam.input == "tokens" and self.lam.encoder_input != "frames":
            raise ValueError("model.lam.encoder_input=frames_and_difference needs lam.input=pixels")
        if self.lam.fsq_margin_weight < 0 or (self.lam.fsq_margin_weight > 0 and self.lam.quantizer != "fsq"):
            raise ValueError(f"model.lam.fsq_margin_weight must be >= 0 and needs model.lam.quantizer=fsq, got "
                             f"{self.lam.fsq_margin_weight} with quantizer '{self.lam.quantizer}'")
        if self.lam.relative_loss < 0:
            raise ValueError(f"model.lam.relative_loss must be >= 0, got {self.lam.relative_loss}")
        if self.lam.change_weight < 0:
            raise ValueError(f"model.lam.change_weight must be >= 0, got {self.lam.change_weight}")
        for name, st in (("tokenizer.encoder", self.tokenizer.encoder), ("tokenizer.decoder", self.tokenizer.decoder),
                         ("lam.encoder", self.lam.encoder), ("lam.decoder", self.lam.decoder),
                         ("dynamics.transformer", self.dynamics.transformer)):
            st.validate(f"model.{name}")
        if self.dynamics.embed_init not in EMBED_INITS:
            raise ValueError(f"model.dynamics.embed_init must be one of {tuple(EMBED_INITS)}, got "
                             f"'{self.dynamics.embed_init}'")
        if self.dynamics.code_smoothing < 0:
            raise ValueError(f"model.dynamics.code_smoothing must be >= 0 (0: one-hot targets), "
                             f"got {self.dynamics.code_smoothing}")
        if self.dynamics.code_smoothing_tokens not in SMOOTHED_TOKENS:
            raise ValueError(f"model.dynamics.code_smoothing_tokens must be one of {SMOOTHED_TOKENS}, got "
                             f"'{self.dynamics.code_smoothing_tokens}'")
        if not 0.0 <= self.dynamics.lam_teacher <= 1.0:
            raise ValueError(
                f"model.dynamics.lam_teacher is a share of clips in [0, 1], got {self.dynamics.lam_teacher}")
        if self.dynamics.lam_teacher > 0 and (self.dynamics.masking != "clean_past" or self.lam.input != "pixels"):
            raise ValueError("model.dynamics.lam_teacher > 0 needs model.dynamics.masking=clean_past (a first masked "
                             "frame to score) and a pixel LAM (model.lam.input=pixels: its decoder draws the target)")
        if self.dynamics.target not in DYNAMICS_TARGETS:
            raise ValueError(f"model.dynamics.target must be one of {DYNAMICS_TARGETS}, got '{self.dynamics.target}'")
        if self.dynamics.target == "code_vector" and (self.dynamics.code_smoothing > 0 or
                                                      not self.dynamics.code_logit_scale > 0):
            raise ValueError("model.dynamics.target=code_vector needs code_logit_scale > 0 and no code_smoothing "
                             "(its loss is a regression, not a cross-entropy)")
        groups = self.dynamics.code_groups
        codes = self.tokenizer.num_codes
        if groups and (self.dynamics.target != "code_vector" or groups < 2 or groups & (groups - 1) or codes % groups):
            raise ValueError(f"model.dynamics.code_groups={groups} needs target=code_vector and a power of two "
                             f"that divides tokenizer.num_codes ({codes}); 0 turns the groups off")
        if not 0.0 < self.dynamics.mask_rate_min <= self.dynamics.mask_rate_max <= 1.0:
            raise ValueError("model.dynamics mask rates must satisfy 0 < min <= max <= 1")


def _from_dict(cls, d: dict, where: str):
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be a mapping, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (known: {sorted(known)})")
    nested = {"tokenizer": TokenizerConfig, "lam": LAMConfig, "dynamics": DynamicsConfig, "transformer": STConfig,
              "encoder": STConfig, "decoder": STConfig}
    args = {k: _from_dict(nested[k], v, f"{where}.{k}") if k in nested else v for k, v in d.items()}
    return cls(**args)
