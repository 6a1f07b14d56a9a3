"""Point a dynamics checkpoint's lineage at a LAM whose decoder was retrained around the same codes.

    python scripts/relink_lam.py --dynamics <dynamics checkpoint dir> --lam-was <the LAM it was trained on> \\
        --lam <the LAM retrained with train.lam_codes_frozen=true>

A dynamics model depends on its LAM's codes only. Lineages written before the codes-only digest
(`checkpoint.weights_digest(path, "lam")`) name the LAM's whole weights file, so they cannot vouch for
a LAM whose decoder changed. This checks that the lineage names `--lam-was`, that `--lam` decides
exactly the same codes (equal codes digests), and only then rewrites the lineage's `lam` entry to the
codes digest (atomically). Anything else is refused with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from genie_robot.checkpoint import accepted_digests, stage_checkpoint, weights_digest


def relink(dynamics: Path, lam_was: Path, lam: Path) -> str:
    dyn = stage_checkpoint(dynamics) or dynamics
    was, new = stage_checkpoint(lam_was) or lam_was, stage_checkpoint(lam) or lam
    meta_file = dyn / "trainer.json"
    meta = json.loads(meta_file.read_text())
    recorded = meta.get("lineage", {}).get("lam")
    if recorded not in accepted_digests(was, "lam"):
        raise SystemExit(f"{meta_file} was not trained on the LAM in {was} (its lineage names {recorded})")
    codes = weights_digest(new, "lam")
    if weights_digest(was, "lam") != codes:
        raise SystemExit(f"the LAM in {new} decides other codes than the one in {was} (codes digests differ): "
                         "the dynamics model must be retrained on it")
    meta["lineage"]["lam"] = codes
    tmp = meta_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, meta_file)
    return codes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dynamics", required=True, type=Path)
    ap.add_argument("--lam-was", required=True, type=Path)
    ap.add_argument("--lam", required=True, type=Path)
    args = ap.parse_args()
    print(json.dumps({"dynamics": str(args.dynamics), "lam": str(args.lam),
                      "codes_digest": relink(args.dynamics, args.lam_was, args.lam)}))


if __name__ == "__main__":
    main()
