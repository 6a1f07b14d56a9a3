"""Load test of a world_model_node started on this machine, loaded as a robot loads it: a live camera
plus concurrent planners.

Starts `world_model_node` on an export (configs/ros/world_model.yaml, plus `-p` overrides) and a
camera process publishing frames at `--camera-hz` (256x320, RT-1's camera, a moving pattern; bgr8
Images, or JPEG CompressedImages with `--compressed`, some undecodable with `--bad-every`), then
measures `~/rollout` twice with the camera on: one client asking `--requests` times in sequence,
then `--clients` client processes asking `--requests` times each, all started together. Prints
one JSON line: requests/s of both and their ratio, latency percentiles, the node's CPU time per
request and memory (before the concurrent phase, its peak, and idle after it), how old its newest
camera frame got while loaded, and its first warnings. Clients import only rclpy and
genie_robot_interfaces (the public API). With `--action` they send `~/rollout_action` goals instead
(same request, the action's latency).

    python -m genie_robot_ros.loadtest outputs/export/sim-rt1 --clients 8 --requests 20 --camera-hz 30
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

NODE = "/world_model_node"


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid} has no VmRSS (it exited)")


def _settled_rss_mb(pid: int, seconds: float = 3.0, period: float = 0.25) -> float:
    readings = []
    for _ in range(int(seconds / period)):
        readings.append(_rss_mb(pid))
        time.sleep(period)
    return min(readings)


# --- roles: each runs in its own process ----------------------------------------------------------
def camera(hz: float, compressed: bool, bad_every: int) -> None:
    """Publishes 256x320 frames at `hz`, stamped now, until stopped: bgr8 Images on `image`, or JPEG
    CompressedImages on `image/compressed`; with `bad_every` N, every Nth one undecodable (its data cut)."""
    import io

    import rclpy
    from PIL import Image as Picture
    from sensor_msgs.msg import CompressedImage, Image

    rclpy.init()
    node = rclpy.create_node("loadtest_camera")
    pub = node.create_publisher(CompressedImage, "image/compressed", 10) if compressed else \
        node.create_publisher(Image, "image", 10)
    y, x = np.mgrid[:256, :320]
    i = 0
    try:
        while rclpy.ok():
            frame = np.stack([(x + 4 * i) % 256, (y + 2 * i) % 256, np.full_like(x, 7 * i % 256)], -1).astype(np.uint8)
            if compressed:
                buf = io.BytesIO()
                Picture.fromarray(frame[..., ::-1]).save(buf, format="JPEG", quality=90)
                msg = CompressedImage(format="bgr8; jpeg compressed bgr8", data=buf.getvalue())
            else:
                msg = Image(height=256, width=320, encoding="bgr8", step=320 * 3, data=frame.tobytes())
            if bad_every and i % bad_every == bad_every - 1:
                msg.data = bytes(msg.data)[: len(msg.data) // 3]  # a truncated frame
            msg.header.stamp = node.get_clock().now().to_msg()
            msg.header.frame_id = "head_camera"
            pub.publish(msg)
            i += 1
            time.sleep(1.0 / hz)
    except KeyboardInterrupt:
        pass


def client(requests: int, candidates: int, horizon: int, context: int, steps: int, sync: str | None,
           action: bool = False) -> None:
    """Asks ~/rollout (or, with `action`, sends ~/rollout_action goals) `requests` times; prints its latencies,
    start and end as JSON."""
    import rclpy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from genie_robot_interfaces.srv import Rollout

    rclpy.init()
    node = rclpy.create_node("loadtest_client")
    rollout = node.create_client(Rollout, f"{NODE}/rollout")
    if not rollout.wait_for_service(timeout_sec=60):
        raise SystemExit("world_model_node's rollout service did not appear within 60 s")
    ages: list[float] = []  # seconds since the node kept its newest camera frame, from its 1 Hz status
    node.create_subscription(String, f"{NODE}/status",
                             lambda m: ages.append(json.loads(m.data).get("camera_age_s")), 10)

    def call(req: Rollout.Request, timeout: float):
        fut = rollout.call_async(req)
        rclpy.spin_until_future_complete(node, fut, timeout_sec=timeout)
        if not fut.done():
            rollout.remove_pending_request(fut)
            return None
        return fut.result()

    # Until the server has matched this client's response reader, Fast DDS drops its answers: a
    # cheap question (answered with an error) is asked until answered; every later one must be.
    lost = 0
    while call(Rollout.Request(num_candidates=0), 5.0) is None:
        lost += 1
        if lost == 10:
            raise SystemExit("none of 10 first requests was answered")
    if not context:  # the requests use the camera's frames: wait until the node has one
        deadline = time.time() + 60
        while not any(a is not None for a in ages) and time.time() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        if not any(a is not None for a in ages):
            raise SystemExit("the node kept no camera frame within 60 s (see its warnings)")
    if sync:
        (Path(sync) / f"ready-{os.getpid()}").touch()
        while not (Path(sync) / "go").exists():
            rclpy.spin_once(node, timeout_sec=0.01)
    frames = [Image(height=64, width=80, encoding="rgb8", step=240, data=bytes([30 * i % 256]) * (64 * 80 * 3))
              for i in range(context)]
    if action:
        from rclpy.action import ActionClient

        from genie_robot_interfaces.action import RolloutAction

        goals = ActionClient(node, RolloutAction, f"{NODE}/rollout_action")
        if not goals.wait_for_server(timeout_sec=60):
            raise SystemExit("world_model_node's rollout_action did not appear within 60 s")

        def call(req: Rollout.Request, timeout: float):  # noqa: F811 (the action path)
            sent = goals.send_goal_async(RolloutAction.Goal(
                context=req.context, latent_actions=req.latent_actions, num_candidates=req.num_candidates,
                horizon=req.horizon, maskgit_steps=req.maskgit_steps, seed=req.seed))
            rclpy.spin_until_future_complete(node, sent, timeout_sec=timeout)
            if not sent.done() or not sent.result().accepted:
                return None
            result = sent.result().get_result_async()
            rclpy.spin_until_future_complete(node, result, timeout_sec=timeout)
            return result.result().result if result.done() else None

    latencies, start = [], time.time()
    for i in range(requests):
        t0 = time.perf_counter()
        r = call(Rollout.Request(context=frames, latent_actions=[i % 8] * (candidates * horizon),
                                 num_candidates=candidates, horizon=horizon, maskgit_steps=steps, seed=i), 600.0)
        latencies.append((time.perf_counter() - t0) * 1000)
        if r is None or not r.success or len(r.frames) != candidates * horizon:
            raise SystemExit(f"request {i} failed: {'no answer' if r is None else r.message}")
    print(json.dumps({"latencies_ms": latencies, "start": start, "end": time.time(), "lost_first_answers": lost,
                      "camera_age_s": [a for a in ages if a is not None]}))


# --- the test -------------------------------------------------------------------------------------
def _clients(args, n: int, sync: Path | None, env: dict) -> list[dict]:
    cmd = [sys.executable, "-m", "genie_robot_ros.loadtest", "--role", "client", "--requests", str(args.requests),
           "--candidates", str(args.candidates), "--horizon", str(args.horizon), "--context", str(args.context),
           "--maskgit-steps", str(args.maskgit_steps)] + (["--sync", str(sync)] if sync else []) \
        + (["--action"] if args.action else [])
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    if sync:
        deadline = time.time() + 180
        while len(list(sync.glob("ready-*"))) < n and time.time() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.05)
        (sync / "go").touch()
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise RuntimeError(f"a load client failed (exit {p.returncode}): {stderr[-3000:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


class _PeakRss:
    """The node's highest RSS while the concurrent clients run, sampled every `period` seconds: how much a
    loaded node needs at once, against what it keeps once idle (`after`)."""

    def __init__(self, pid: int, period: float = 0.5):
        import threading

        self.pid, self.period, self.peak = pid, period, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, _rss_mb(self.pid))
            except (OSError, RuntimeError):
                return  # the node exited; the caller reports that
            self._stop.wait(self.period)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _summary(results: list[dict]) -> dict:
    lat = np.concatenate([r["latencies_ms"] for r in results])
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {"requests": int(lat.size), "requests_per_s": round(lat.size / wall, 3),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1)}


def run(args) -> dict:
    import tempfile

    from genie_robot.config import config_dir

    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    params = ["-p", f"model_dir:={args.export}"] + [a for p in args.param for a in ("-p", p)]
    if args.compressed:
        params += ["-p", "camera_transport:=compressed"]
    node = subprocess.Popen([str(Path(sys.executable).parent / "world_model_node"), "--ros-args", "--params-file",
                             str(Path(config_dir()) / "ros" / "world_model.yaml"), *params], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cam = subprocess.Popen([sys.executable, "-m", "genie_robot_ros.loadtest", "--role", "camera", "--camera-hz",
                            str(args.camera_hz), "--bad-every", str(args.bad_every)]
                           + (["--compressed"] if args.compressed else []), env=env) if args.camera_hz > 0 else None
    try:
        _clients(argparse.Namespace(**{**vars(args), "requests": max(2, args.requests // 4)}), 1, None, env)  # warm-up
        cpu = _cpu_s(node.pid)
        sequential = _clients(args, 1, None, env)
        cpu_seq = (_cpu_s(node.pid) - cpu) / args.requests
        rss_before = _rss_mb(node.pid)
        with tempfile.TemporaryDirectory() as sync:
            cpu = _cpu_s(node.pid)
            with _PeakRss(node.pid) as rss:
                concurrent = _clients(args, args.clients, Path(sync), env)
            cpu_conc = (_cpu_s(node.pid) - cpu) / (args.requests * args.clients)
        # What the node keeps once idle: the least over 3 s. Under load RSS swings by about 100 MB with the
        # requests in flight (sampled every 0.5 s: 478 MB before, 517 at mid-run, peak 575, idle after 482),
        # and one reading taken as the last answer left read +69 MB in a CI run.
        rss_after = _settled_rss_mb(node.pid)
        alive = node.poll() is None
    finally:
        if cam is not None:
            cam.send_signal(signal.SIGINT)
            cam.wait(timeout=30)
        node.send_signal(signal.SIGINT)
        try:
            log, _ = node.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()
            log, _ = node.communicate()
    seq, conc = _summary(sequential), _summary(concurrent)
    ages = [a for r in concurrent for a in r["camera_age_s"]]
    return {
        "export": args.export, "camera_hz": args.camera_hz, "camera": "jpeg" if args.compressed else "bgr8",
        "camera_bad_every": args.bad_every, "clients": args.clients, "endpoint": "rollout_action" if args.action
        else "rollout",
        "request": {"candidates": args.candidates, "horizon": args.horizon, "context": args.context,
                    "maskgit_steps": args.maskgit_steps or "node default"},
        "sequential": seq, "concurrent": conc,
        "throughput_ratio": round(conc["requests_per_s"] / seq["requests_per_s"], 3),
        "node_cpu_ms_per_request": {"sequential": round(cpu_seq * 1000, 1), "concurrent": round(cpu_conc * 1000, 1)},
        # Before the concurrent phase, its peak (sampled every 0.5 s), and what the node keeps idle after it.
        "node_rss_mb": {"before": round(rss_before, 1), "peak": round(rss.peak, 1), "after": round(rss_after, 1)},
        # The node's status while the concurrent clients ran: how old its newest camera frame got.
        "camera_age_s_during_load": {"max": max(ages, default=None), "reports": len(ages)},
        "lost_first_answers": sum(r["lost_first_answers"] for r in sequential + concurrent),
        "node_alive": alive, "node_exit": node.returncode, "node_log_tail": log[-2000:] if node.returncode else "",
        "node_warnings": [line for line in log.splitlines() if "WARN" in line][:5],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m genie_robot_ros.loadtest", description=__doc__.split("\n\n")[0])
    ap.add_argument("export", nargs="?", help="exported model directory (genie-robot export)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=20, help="rollouts per client")
    ap.add_argument("--camera-hz", type=float, default=30.0, help="0: no camera")
    ap.add_argument("--compressed", action="store_true", help="the camera publishes JPEG CompressedImages")
    ap.add_argument("--bad-every", type=int, default=0, help="every Nth camera frame undecodable (0: none)")
    ap.add_argument("--candidates", type=int, default=2)
    ap.add_argument("--horizon", type=int, default=2)
    ap.add_argument("--context", type=int, default=2, help="context frames each request sends (0: the camera's)")
    ap.add_argument("--maskgit-steps", type=int, default=0, help="0: the node's default")
    ap.add_argument("--action", action="store_true", help="clients send ~/rollout_action goals, not ~/rollout calls")
    ap.add_argument("-p", "--param", action="append", default=[], help="a node parameter, name:=value")
    ap.add_argument("--role", choices=["test", "camera", "client"], default="test", help=argparse.SUPPRESS)
    ap.add_argument("--sync", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role == "camera":
        camera(args.camera_hz, args.compressed, args.bad_every)
    elif args.role == "client":
        client(args.requests, args.candidates, args.horizon, args.context, args.maskgit_steps, args.sync, args.action)
    else:
        if not args.export:
            ap.error("the export directory is required")
        print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
