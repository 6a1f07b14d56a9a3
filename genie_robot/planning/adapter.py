"""Latent-to-robot action adapter: from the LAM's 8 latent actions to RT-1 action vectors.

Genie's CoinRun recipe: with a few labelled episodes, map each latent action to the real
action it co-occurs with. RT-1 actions are continuous, so `mean` maps each latent id to the
mean real action of the transitions the LAM gave that id (the co-occurrence estimate for a
continuous action). `ridge` is a small regressor over the latent id and the previous one
(one-hot each, plus a bias, ridge-regularised), which can tell a push that starts from rest
from one already under way. Both only need latent ids, so a planner's sequence maps directly.

Output per step: world_vector (3), rotation_delta (3), gripper_closedness_action (1).
Saved as JSON beside the model (`<run>/adapter.json`), with its held-out error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genie_robot.data.schema import ACTION_KEYS

ACTION_DIM = 7
METHODS = ("mean", "ridge")
FORMAT = 1


@dataclass
class Adapter:
    method: str
    num_actions: int
    weights: np.ndarray  # mean: [A, 7]; ridge: [2A + 1, 7]
    info: dict

    def _features(self, ids: np.ndarray) -> np.ndarray:
        """[H, 2A + 1]: one-hot of each id, one-hot of the id before it (none for the first), bias."""
        a = self.num_actions
        feats = np.zeros((len(ids), 2 * a + 1))
        feats[np.arange(len(ids)), ids] = 1
        feats[np.arange(1, len(ids)), a + ids[:-1]] = 1
        feats[:, -1] = 1
        return feats

    def predict(self, latent_ids) -> np.ndarray:
        """float32 [H, 7] robot actions for a sequence of latent ids [H]."""
        ids = np.asarray(latent_ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_actions):
            raise ValueError(f"latent ids must be in [0, {self.num_actions}), got {ids.min()}..{ids.max()}")
        out = self.weights[ids] if self.method == "mean" else self._features(ids) @ self.weights
        return out.astype(np.float32)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "method": self.method, "num_actions": self.num_actions,
                "action_keys": list(ACTION_KEYS), "weights": self.weights.tolist(), **self.info}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Adapter:
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} is not a genie-robot adapter (format {FORMAT}): {e}") from e
        return cls.from_dict(doc, str(path))

    @classmethod
    def from_dict(cls, doc: dict, where: str = "adapter") -> Adapter:
        try:
            if doc.get("format") != FORMAT or doc.get("method") not in METHODS:
                raise ValueError(f"format {doc.get('format')} / method {doc.get('method')}")
            weights = np.asarray(doc["weights"], dtype=np.float64)
            a = int(doc["num_actions"])
        except (AttributeError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{where} is not a genie-robot adapter (format {FORMAT}): {e}") from e
        rows = a if doc["method"] == "mean" else 2 * a + 1
        if weights.shape != (rows, ACTION_DIM):
            raise ValueError(f"{where}: weights have shape {weights.shape}, expected ({rows}, {ACTION_DIM})")
        info = {k: v for k, v in doc.items() if k not in ("format", "method", "num_actions", "weights", "action_keys")}
        return cls(doc["method"], a, weights, info)


def fit(method: str, ids: list[np.ndarray], actions: list[np.ndarray], num_actions: int,
        ridge: float = 1.0) -> Adapter:
    """Fit on sequences of latent ids [T-1] and their real actions [T-1, 7]."""
    if method not in METHODS:
        raise ValueError(f"adapter method must be one of {METHODS}, got '{method}'")
    flat_ids, flat_act = np.concatenate(ids), np.concatenate(actions).astype(np.float64)
    if len(flat_ids) == 0:
        raise ValueError("no labelled transitions to fit the adapter on")
    overall = flat_act.mean(0)
    # The baseline any held-out error is judged against (eval: the adapter vs predicting this mean).
    info = {"fitted_transitions": len(flat_ids), "train_mean_action": overall.tolist()}
    if method == "mean":
        # An id never seen in the labelled data maps to the overall mean action.
        w = np.stack([flat_act[flat_ids == k].mean(0) if (flat_ids == k).any() else overall
                      for k in range(num_actions)])
        return Adapter(method, num_actions, w, info)
    probe = Adapter(method, num_actions, np.zeros((2 * num_actions + 1, ACTION_DIM)), {})
    x = np.concatenate([probe._features(s) for s in ids])
    reg = ridge * np.eye(x.shape[1])
    reg[-1, -1] = 0  # no penalty on the bias
    w = np.linalg.solve(x.T @ x + reg, x.T @ flat_act)
    return Adapter(method, num_actions, w, {**info, "ridge": ridge})


def held_out_error(adapter: Adapter, ids: list[np.ndarray], actions: list[np.ndarray],
                   train_mean: np.ndarray) -> dict:
    """Mean squared error per action group on held-out sequences, against predicting the training mean."""
    pred = np.concatenate([adapter.predict(s) for s in ids])
    truth = np.concatenate(actions)
    groups = {"world_vector": slice(0, 3), "rotation_delta": slice(3, 6), "gripper_closedness_action": slice(6, 7)}
    out = {}
    for name, sl in groups.items():
        out[f"mse_{name}"] = float(((pred[:, sl] - truth[:, sl]) ** 2).mean())
        out[f"baseline_mse_{name}"] = float(((train_mean[sl] - truth[:, sl]) ** 2).mean())
    out["held_out_transitions"] = len(truth)
    return out
