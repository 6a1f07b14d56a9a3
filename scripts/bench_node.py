"""Rollout request latency through world_model_node, over ROS 2 (DDS, two processes).

Starts the node on an exported model, sends `--requests` rollout requests (B candidates x H
steps, the context sent with each request), and prints one JSON line: p50/p99 of the round
trip the client sees and of the node's own `inference_ms`.

    python scripts/bench_node.py --model-dir outputs/export/demo [--batch 8 --horizon 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def measure(args: argparse.Namespace, resolution: list[int], domain: int) -> tuple[list[float], list[float]]:
    """Round-trip and in-node inference milliseconds of `args.requests` rollouts (after one warm-up)."""
    import rclpy

    from genie_robot_interfaces.srv import Rollout
    from genie_robot_ros.world_model_node import frame_msg

    h, w = resolution
    os.environ.update({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(domain)})
    repo = Path(__file__).resolve().parent.parent
    node = subprocess.Popen([str(Path(sys.executable).parent / "world_model_node"), "--ros-args", "--params-file",
                             str(repo / "configs/ros/world_model.yaml"), "-p", f"model_dir:={args.model_dir}"])
    rclpy.init()
    client = rclpy.create_node("bench_node_client")
    try:
        cli = client.create_client(Rollout, "/world_model_node/rollout")
        if not cli.wait_for_service(timeout_sec=120):
            raise RuntimeError("world_model_node did not come up")
        rng = np.random.default_rng(0)
        context = [frame_msg(rng.integers(0, 256, (3, h, w), dtype=np.uint8)) for _ in range(args.context)]
        round_trip, inference = [], []
        for i in range(args.requests + 1):  # the first is a warm-up
            req = Rollout.Request(context=context, num_candidates=args.batch, horizon=args.horizon, seed=i,
                                  maskgit_steps=args.steps,
                                  latent_actions=rng.integers(0, 8, args.batch * args.horizon).tolist())
            start = time.perf_counter()
            fut = cli.call_async(req)
            rclpy.spin_until_future_complete(client, fut, timeout_sec=600)
            res = fut.result()
            if res is None or not res.success:
                raise RuntimeError(f"rollout failed: {None if res is None else res.message}")
            if i:
                round_trip.append((time.perf_counter() - start) * 1000)
                inference.append(res.inference_ms)
    finally:
        client.destroy_node()
        rclpy.try_shutdown()
        node.send_signal(signal.SIGINT)
        node.wait(timeout=30)
    return round_trip, inference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--horizon", type=int, default=4)
    ap.add_argument("--context", type=int, default=8)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--json", action="store_true", help="accepted for symmetry: the output is always one JSON line")
    args = ap.parse_args()

    from domain_coordinator import domain_id

    manifest = json.loads((Path(args.model_dir) / "manifest.json").read_text())
    with domain_id() as domain:  # a free DDS domain: no cross-talk with other ROS graphs on this machine
        round_trip, inference = measure(args, manifest["resolution"], domain)
    pct = lambda xs, q: round(float(np.percentile(xs, q)), 1)  # noqa: E731
    print(json.dumps({"bench": "node_rollout", "model": manifest["model"]["name"], "provider_order":
                      "configs/ros/world_model.yaml", "batch": args.batch, "horizon": args.horizon,
                      "context_frames": args.context, "maskgit_steps": args.steps, "requests": args.requests,
                      "round_trip_ms_p50": pct(round_trip, 50), "round_trip_ms_p99": pct(round_trip, 99),
                      "inference_ms_p50": pct(inference, 50), "inference_ms_p99": pct(inference, 99),
                      "cpus": os.cpu_count(), "machine": platform.machine()}))


if __name__ == "__main__":
    main()
