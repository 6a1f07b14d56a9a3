"""Side by side: a `genie-robot eval` result and the held-out evaluation on a reference's model card.

    python scripts/compare_card.py --name sim-rt1 --eval outputs/demo/eval/eval.json

`make demo` ends its evaluation with this, so a user sees that the shipped model does on their
machine what its card (docs/REFERENCE_<name>.md, reference.json) says. The card's evaluation with
the same settings (its full held-out one, or the shorter one make demo runs) is the one compared.
Printed as a table, one row per headline metric; a row whose values differ by more than
--tolerance (in the metric's own units: dB, NMI, cost) is marked. CPU kernels and thread counts
can change a sampled MaskGIT token and with it a rollout, so a small difference on another
machine is expected. The exit code is 1 only when the card has no evaluation with this one's
settings (then the numbers cannot be compared at all).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genie_robot.reference import EVAL_SETTINGS, HEADLINE_METRICS, card


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="reference model name, e.g. sim-rt1")
    ap.add_argument("--eval", required=True, help="eval.json written by `genie-robot eval`")
    ap.add_argument("--tolerance", type=float, default=0.05)
    args = ap.parse_args()
    ours = json.loads(Path(args.eval).read_text())
    info = card(args.name)
    evals = [e for e in (info.get("heldout_eval"), info.get("demo_eval")) if e]
    same = [e for e in evals if all(e.get(k) == ours.get(k) for k in EVAL_SETTINGS)]
    if not same:
        print(f"reference '{args.name}' has no held-out evaluation on its card with this run's settings "
              f"({', '.join(f'{k}={ours.get(k)}' for k in EVAL_SETTINGS)}); the card has: "
              + ("; ".join(', '.join(f'{k}={e.get(k)}' for k in EVAL_SETTINGS) for e in evals) or "none"))
        return 1
    theirs = same[0]
    print(f"\nThis run against the card of '{args.name}' ({ours['clips']} held-out clips, MaskGIT "
          f"{ours['maskgit_steps']} steps, temperature {ours['temperature']}):\n")
    print(f"| {'metric':<54} | {'card':>10} | {'this run':>10} |")
    print(f"| {'-' * 54} | {'-' * 10} | {'-' * 10} |")
    for key, label in HEADLINE_METRICS:
        if key not in theirs and key not in ours:
            continue
        a, b = theirs.get(key), ours.get(key)
        mark = "" if a is not None and b is not None and abs(a - b) <= args.tolerance else "  <- differs"
        show = lambda v: f"{v:10.5g}" if isinstance(v, float) else f"{v!s:>10}"  # noqa: E731
        print(f"| {label:<54} | {show(a)} | {show(b)} |{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
