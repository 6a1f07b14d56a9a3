"""Print docs/MODELS.md's tables: parameter counts (meta device) and FLOPs per generated frame.

Run: python scripts/model_table.py
"""

from __future__ import annotations

import torch
from hydra import compose, initialize_config_dir

from genie_robot.config import config_dir, typed
from genie_robot.models import COMPONENTS, ModelConfig, build
from genie_robot.models.flops import generated_frame_flops


def main() -> None:
    names = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml") if not p.stem.startswith("_"))
    print("| config | resolution | frames | tokens/frame | tokenizer | LAM | dynamics | total | named |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with initialize_config_dir(config_dir=str(config_dir() / "model"), version_base="1.3"):
        cfgs = {n: typed(compose(config_name=n), ModelConfig) for n in names}
    for name, cfg in cfgs.items():
        with torch.device("meta"):
            counts = {c: sum(p.numel() for p in build(cfg, c).parameters()) for c in COMPONENTS}
        total = sum(counts.values())
        named = ", ".join(f"{k} {v / 1e6:,.1f}M" for k, v in cfg.named_params.items())
        h, w = cfg.resolution
        print(f"| {name} | {h}x{w} | {cfg.frames} | {cfg.tokens_per_frame()} | "
              + " | ".join(f"{counts[c] / 1e6:,.2f}M" for c in COMPONENTS) + f" | {total / 1e6:,.1f}M | {named} |")
    print()
    print("| config | MaskGIT steps | context frames | GFLOP/frame cached | GFLOP/frame uncached | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in ("demo", "rt1_2.5b"):
        for steps in (8, 25):
            f = generated_frame_flops(cfgs[name], maskgit_steps=steps)
            print(f"| {name} | {steps} | {cfgs[name].frames - 1} | {f['cached'] / 1e9:,.1f} | "
                  f"{f['uncached'] / 1e9:,.1f} | {f['uncached'] / f['cached']:.1f}x |")


if __name__ == "__main__":
    main()
