"""Merging a LAM's quantizer codes into fewer actions by what its decoder draws for each.

A binary FSQ of 8 codes spends two codes on the arm holding still (the still transitions sit mid-way along
one latent bit, so noise picks the side) and leaves six for the motions; no loss weighting moved them to
one side (docs/MODELS.md, "Six LAM recipes"). Trained with 16 codes, the LAM has room for every motion and
splits "still" (and some motions) over several codes, which then predict nearly the same next frame. That
is what this module measures, without any real action: for each pair of codes, how far apart the
decoder's next frames are when every transition of the same clips is given one code or the other. Codes
that too few transitions use join the code they draw most alike; the rest are merged, closest pair first
(average linkage), until num_actions groups are left. Actions are numbered by how much their frames change
(action 0 changes the frame least), and each is decoded as its most used code
(`genie_robot.models.vq.MergedCodes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from genie_robot.models.lam import LatentActionModel


@dataclass
class CodeEffects:
    distance: np.ndarray  # [Q, Q] RMS difference (0-255) of the decoder's next frames under code i vs code j
    change: np.ndarray  # [Q] RMS difference (0-255) of the decoder's next frame under the code from the frame before
    usage: np.ndarray  # [Q] transitions of the clips the encoder gives each code


@torch.no_grad()
def code_effects(lam: LatentActionModel, clips_u8: np.ndarray, batch_size: int = 8) -> CodeEffects:
    """What each of a LAM's codes does on these clips (uint8 [N, T, C, H, W]); the LAM must be one of
    plain codes (`model.lam.quantizer_codes=0`), num_actions of them."""
    if lam.input != "pixels":
        raise ValueError("merging codes by their decoded frames needs a LAM on pixels (model.lam.input=pixels)")
    q = lam.vq.num_codes
    sq = torch.zeros(q, q, dtype=torch.float64)
    change = torch.zeros(q, dtype=torch.float64)
    usage = torch.zeros(q, dtype=torch.long)
    pixels = 0
    lam.eval()
    for start in tqdm(range(0, len(clips_u8), batch_size), desc="code effects", unit="batch"):
        x = torch.from_numpy(clips_u8[start:start + batch_size]).float() / 255
        usage += torch.bincount(lam.infer_actions(x).flatten(), minlength=q)
        ids = torch.zeros(x.shape[0], x.shape[1] - 1, dtype=torch.long)
        preds = torch.stack([lam.decode_ids(x, ids + k).flatten() for k in range(q)]).double()  # [Q, M]
        norms = (preds**2).sum(1)
        sq += norms[:, None] + norms[None, :] - 2 * preds @ preds.T
        change += ((preds - x[:, :-1].flatten().double()) ** 2).sum(1)
        pixels += preds.shape[1]
    scale = 255.0
    return CodeEffects(distance=(sq.clamp(min=0) / pixels).sqrt().numpy() * scale,
                       change=(change / pixels).sqrt().numpy() * scale, usage=usage.numpy())


def group_change(effects: CodeEffects, codes: list[int]) -> float:
    """How much a group of codes changes the frame: its codes' `change`, weighted by their usage."""
    return float(np.average(effects.change[codes], weights=np.maximum(effects.usage[codes], 1e-9)))


def merge_codes(effects: CodeEffects, num_actions: int, min_share: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """(code_action [Q], action_code [num_actions]): each code's action and the code that stands for each.

    Codes used by less than `min_share` of the transitions cannot become an action of their own (a dynamics
    model would see too few of them to learn what they do); each joins the group of the common code whose
    frames it draws most alike. The common codes are merged by average linkage on `effects.distance`.
    """
    d, usage = effects.distance, effects.usage
    q = len(usage)
    if not 0 < num_actions < q:
        raise ValueError(f"merging {q} codes needs 0 < num_actions < {q}, got {num_actions}")
    common = [k for k in range(q) if usage[k] >= min_share * usage.sum()]
    if len(common) < num_actions:
        raise ValueError(f"only {len(common)} of the {q} codes label at least {min_share:.0%} of the transitions "
                         f"(usage {usage.tolist()}): too few for {num_actions} actions; lower min_share or train "
                         "the codes longer")
    groups = [[k] for k in common]
    while len(groups) > num_actions:
        pairs = [(d[np.ix_(a, b)].mean(), i, j) for i, a in enumerate(groups) for j, b in enumerate(groups) if i < j]
        _, i, j = min(pairs)
        groups[i] = groups[i] + groups.pop(j)
    for k in range(q):
        if k not in common:
            nearest = min(common, key=lambda c: d[k, c])
            next(g for g in groups if nearest in g).append(k)
    # Action 0 changes the frame least; ties (none expected) by the smallest code.
    order = sorted(range(len(groups)), key=lambda g: (group_change(effects, groups[g]), min(groups[g])))
    code_action = np.zeros(q, np.int64)
    action_code = np.zeros(num_actions, np.int64)
    for action, g in enumerate(order):
        members = groups[g]
        code_action[members] = action
        action_code[action] = max(members, key=lambda c: (usage[c], -c))
    return code_action, action_code
