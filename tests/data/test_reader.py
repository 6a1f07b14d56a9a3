"""RT-1 reader: clip windowing, splits, sharding, decoding, on a TFDS-written dataset."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import SPEC_LENGTHS, pixel_value

from genie_robot.data.reader import ClipDataset, DataConfig, shard_range, split_range


def cfg_for(path, **kw) -> DataConfig:
    base = dict(path=str(path), clip_frames=4, frame_stride=2, batch_size=1, drop_remainder=False,
                val_fraction=0.0, shuffle=False, resolution=[32, 40])
    base.update(kw)
    return DataConfig(**base)


def clips(ds) -> list[dict]:
    """Unbatch a pass into per-clip records."""
    out = []
    for b in ds:
        for i in range(b["frames"].shape[0]):
            wv = b["actions"]["world_vector"][i].numpy()
            out.append({
                "frames": b["frames"][i], "wv": wv, "grip": b["actions"]["gripper_closedness_action"][i].numpy(),
                "episode": int(round(wv[0, 0] / wv[0, 2])), "start": int(b["start"][i]), "id": b["episode"][i],
            })
    return out


def expected_starts(length: int, span: int, hop: int) -> list[int]:
    return list(range(0, length - span + 1, hop))


def test_windowing_stays_inside_episodes_and_counts_short_ones(spec_dataset):
    cfg = cfg_for(spec_dataset)  # T=4, stride=2: span 7, hop 7
    ds = ClipDataset(cfg)
    got = clips(ds)
    want = {(ep, s) for ep, n in enumerate(SPEC_LENGTHS) for s in expected_starts(n, cfg.span, cfg.hop)}
    assert {(c["episode"], c["start"]) for c in got} == want
    assert len(got) == len(want)
    assert ds.stats["episodes"] == len(SPEC_LENGTHS)
    assert ds.stats["skipped_short"] == sum(n < cfg.span for n in SPEC_LENGTHS) == 2
    for c in got:
        steps = c["start"] + cfg.frame_stride * np.arange(cfg.clip_frames)
        assert steps[-1] < SPEC_LENGTHS[c["episode"]]
        # world_vector[1] sums the step indices inside each stride window: t + (t+1), clamped at the end.
        n = SPEC_LENGTHS[c["episode"]]
        for k, t in enumerate(steps):
            window = [u for u in range(t, t + cfg.frame_stride) if u < n]
            assert c["wv"][k, 1] == pytest.approx(sum(window))
            assert c["wv"][k, 2] == pytest.approx(len(window))
            assert c["grip"][k, 0] == pytest.approx(window[-1])  # non-displacement: the last command
        # Pixels encode (episode, step): decoded, cropped and resized frames keep them.
        means = c["frames"].float().mean(dim=(1, 2, 3)).numpy()
        assert np.allclose(means, [pixel_value(c["episode"], int(t)) for t in steps], atol=3)


def test_batches_are_uint8_btchw(spec_dataset):
    ds = ClipDataset(cfg_for(spec_dataset, batch_size=3, drop_remainder=True, clip_frames=5, frame_stride=1))
    batches = list(ds)
    assert batches and all(b["frames"].shape == (3, 5, 3, 32, 40) for b in batches)
    assert batches[0]["frames"].dtype == torch.uint8
    assert batches[0]["actions"]["world_vector"].shape == (3, 5, 3)


def test_overlapping_hop_and_random_phase(spec_dataset):
    cfg = cfg_for(spec_dataset, clip_frames=4, frame_stride=1, clip_hop=2)
    got = {(c["episode"], c["start"]) for c in clips(ClipDataset(cfg))}
    assert got == {(ep, s) for ep, n in enumerate(SPEC_LENGTHS) for s in range(0, n - 3, 2)}
    # Shuffled passes start each episode at a seeded random phase in [0, hop): all steps get used.
    shuffled = replace(cfg, shuffle=True, clip_hop=7)
    starts = set()
    for epoch in range(6):
        ds = ClipDataset(shuffled)
        ds.set_epoch(epoch)
        starts |= {c["start"] % 7 for c in clips(ds)}
    assert len(starts) > 1


def test_split_is_deterministic_disjoint_and_covering(spec_dataset):
    n = len(SPEC_LENGTHS)
    tr, va = split_range(n, 0.25, "train"), split_range(n, 0.25, "val")
    assert tr == (0, 9) and va == (9, 12)
    cfg = cfg_for(spec_dataset, val_fraction=0.25, clip_frames=2, frame_stride=1)
    train_eps = {c["episode"] for c in clips(ClipDataset(cfg, "train"))}
    val_eps = {c["episode"] for c in clips(ClipDataset(cfg, "val"))}
    assert not train_eps & val_eps
    assert train_eps | val_eps == set(range(n))
    assert val_eps == {c["episode"] for c in clips(ClipDataset(cfg, "val"))}


def test_seeded_shuffle_repeats_and_epochs_differ(spec_dataset):
    cfg = cfg_for(spec_dataset, shuffle=True, clip_frames=2, frame_stride=1, seed=3)
    order = lambda epoch: [(c["episode"], c["start"]) for c in clips(_epoch(ClipDataset(cfg), epoch))]  # noqa: E731
    assert order(0) == order(0)
    assert order(0) != order(1)
    assert sorted(order(0)) != order(0)  # actually shuffled


def _epoch(ds, epoch):
    ds.set_epoch(epoch)
    return ds


def test_shard_range_is_disjoint_and_covering():
    for n in range(0, 30):
        for count in range(1, 9):
            ranges = [shard_range(5, 5 + n, i, count) for i in range(count)]
            assert ranges[0][0] == 5 and ranges[-1][1] == 5 + n
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
            sizes = [e - s for s, e in ranges]
            assert max(sizes) - min(sizes) <= 1


def test_rank_sharding_over_real_reads(spec_dataset):
    cfg = cfg_for(spec_dataset, clip_frames=2, frame_stride=1, shuffle=True)
    per_rank = [{c["id"] for c in clips(ClipDataset(cfg, rank=r, world_size=3))} for r in range(3)]
    assert all(per_rank)
    assert not (per_rank[0] & per_rank[1] or per_rank[0] & per_rank[2] or per_rank[1] & per_rank[2])
    everything = {c["id"] for c in clips(ClipDataset(cfg))}
    assert set().union(*per_rank) == everything
    assert len(everything) == sum(n >= 2 for n in SPEC_LENGTHS)


def test_dataloader_workers_split_the_rank_without_overlap(spec_dataset):
    cfg = cfg_for(spec_dataset, clip_frames=2, frame_stride=1)
    loader = torch.utils.data.DataLoader(
        ClipDataset(cfg, rank=1, world_size=2), batch_size=None, num_workers=2, multiprocessing_context="spawn")
    ids = [c["id"] for c in clips(loader)]
    single = [c["id"] for c in clips(ClipDataset(cfg, rank=1, world_size=2))]
    assert sorted(set(ids)) == sorted(set(single))
    # Clip ids repeat within an episode but never across workers: episode sets must match exactly.
    assert len(ids) == len(single)


def test_sim_dataset_reads_as_clips(sim_dataset):
    ds = ClipDataset(DataConfig(path=str(sim_dataset), clip_frames=4, batch_size=2, val_fraction=0.0))
    b = next(iter(ds))
    assert b["frames"].shape == (2, 4, 3, 64, 80)
    assert b["frames"].float().std() > 5  # a real picture, not a blank frame
