"""The end of `make demo`: the world model driving the simulated robot over ROS 2, closed loop.

Three node processes on one DDS domain, as on a robot: `sim_robot_node` (the MuJoCo Google Robot,
synchronous: one step per action), `world_model_node` on the exported model (configs/ros/world_model.yaml)
and `control_node`. The scene is `genie-robot control`'s (`control.seed`, `control.episode`: a seed the
reference never trained on) and the goal its own: the camera after `control.goal_steps` steps of the
scripted controller that would have made that episode. This client resets the scene, sends the goal to
control_node's `~/reach`, prints each step's feedback (the plan, its cost, the robot action, the camera's
distance to the goal), and reports where the end-effector ended against where the scripted steps put it.
control_node writes the episode's GIF (camera | goal | the plan's imagined frame, a row per step). Every
node must then stop cleanly.

    python -m genie_robot_ros.demo out=outputs/export/sim-rt1 control.max_steps=3 [control.seed=2000]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _nodes(export_dir: str, params: Path, gif_dir: Path, seed: int, episode: int, control: dict, env: dict
           ) -> list[tuple[str, subprocess.Popen]]:
    bin_dir = Path(sys.executable).parent
    specs = {
        "sim_robot_node": ["-p", "rate_hz:=0.0", "-p", f"seed:={seed}", "-p", f"episode:={episode}"],
        "world_model_node": ["--params-file", str(params), "-p", f"model_dir:={export_dir}"],
        "control_node": ["-r", "plan:=/world_model_node/plan", "-r", "executed:=/sim_robot_node/executed",
                         "-p", f"gif_dir:={gif_dir}", *(x for k, v in control.items() for x in ("-p", f"{k}:={v}"))],
    }
    return [(name, subprocess.Popen([str(bin_dir / name), "--ros-args", *args], env=env))
            for name, args in specs.items()]


def _stop(procs: list[tuple[str, subprocess.Popen]]) -> dict:
    for _, p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    codes = {}
    for name, p in procs:
        try:
            codes[name] = p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            codes[name] = "killed after 30 s"
    return codes


def run(export_dir: str, start: tuple[int, int], goal_task, max_steps: int, control: dict, gif_dir: Path,
        params: Path, domain: int) -> dict:
    """One Reach episode over DDS; the summary. sim_robot_node starts on `start` (seed, episode); `goal_task()`
    makes the goal (a genie_robot.sim.goals.GoalTask, whose scene the client then resets) while the nodes start."""
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.action import ActionClient

    from genie_robot_interfaces.action import Reach
    from genie_robot_interfaces.srv import ResetScene
    from genie_robot_ros.msgs import image_msg

    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(domain)}
    os.environ.update(env)
    gif_dir.mkdir(parents=True, exist_ok=True)
    procs = _nodes(export_dir, params, gif_dir, *start, control, env)
    rclpy.init()
    client = rclpy.create_node("genie_demo_client")
    poses: list[np.ndarray] = []
    try:
        task = goal_task()
        client.create_subscription(PoseStamped, "ee_pose", lambda m: poses.append(
            np.array([m.pose.position.x, m.pose.position.y, m.pose.position.z])), 10)
        reset = client.create_client(ResetScene, "/sim_robot_node/reset")
        reach = ActionClient(client, Reach, "/control_node/reach")
        for what, ready in (("sim_robot_node", lambda t: reset.wait_for_service(timeout_sec=t)),
                            ("control_node", lambda t: reach.wait_for_server(timeout_sec=t))):
            if not ready(120):
                raise RuntimeError(f"{what} did not come up (see its log above)")
        answer = None
        for _ in range(10):  # the first requests can be lost while discovery completes
            fut = reset.call_async(ResetScene.Request(seed=task.seed, episode=task.episode, scene=task.scene))
            rclpy.spin_until_future_complete(client, fut, timeout_sec=5)
            if fut.done():
                answer = fut.result()
                break
            reset.remove_pending_request(fut)
        if answer is None or not answer.success:
            raise RuntimeError(f"sim_robot_node did not reset the scene: {answer and answer.message}")

        def show(msg) -> None:
            f = msg.feedback
            move = [round(float(v), 4) for v in f.robot_action[:3]]
            print(f"step {f.step}: plan {list(f.plan)} (imagined cost {f.plan_cost:.4f}), robot action {move} m, "
                  f"camera-to-goal MSE {f.goal_mse:.4f}", flush=True)

        for _ in range(20):  # control_node rejects a goal until it has the reset's camera frame
            sent = reach.send_goal_async(Reach.Goal(goal=image_msg(task.goal_image), max_steps=max_steps),
                                         feedback_callback=show)
            rclpy.spin_until_future_complete(client, sent, timeout_sec=60)
            if sent.done() and sent.result().accepted:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError("control_node did not accept the goal (see its log above)")
        done = sent.result().get_result_async()
        rclpy.spin_until_future_complete(client, done, timeout_sec=120 * max_steps + 60)
        if not done.done():
            raise RuntimeError("control_node did not finish the episode")
        res = done.result().result
        deadline = time.time() + 1.0  # the robot's last pose
        while time.time() < deadline:
            rclpy.spin_once(client, timeout_sec=0.1)
        if not res.success:
            raise RuntimeError(f"the episode ended {res.reason}: {res.message}")
        end = poses[-1] if poses else None
        summary = {"closed_loop_gif": res.gif, "reason": res.reason, "steps": res.steps,
                   "latent_actions": list(res.latent_actions),
                   "goal_mse": [round(m, 4) for m in res.goal_mse],
                   "ee_to_goal_start_m": round(task.distance, 4),
                   "ee_to_goal_end_m": None if end is None else round(float(np.linalg.norm(end - task.goal_ee)), 4),
                   "scene": {"seed": task.seed, "episode": task.episode, "goal_steps": task.goal_steps}}
    finally:
        client.destroy_node()
        rclpy.try_shutdown()
        codes = _stop(procs)
    if any(c != 0 for c in codes.values()):
        raise RuntimeError(f"a node did not stop cleanly: {codes}")
    summary["node_exits"] = codes
    return summary


def main() -> int:
    from domain_coordinator import domain_id

    from genie_robot.config import config_dir, load_config
    from genie_robot.sim.service import SimProcess

    cfg = load_config(sys.argv[1:])
    c = cfg.control
    manifest = Path(str(cfg.out)) / "manifest.json"
    if not manifest.is_file():
        print(f"genie_robot_ros.demo: out={cfg.out} is not an exported model (no manifest.json): "
              "`genie-robot export ckpt=<run or reference> out=<dir>` first", file=sys.stderr)
        return 2

    def goal_task():
        sim = SimProcess()  # the goal, rendered in a child process like every in-process sim render
        try:
            return sim.goal_task(c.seed, c.episode, c.goal_steps, c.scene)
        finally:
            sim.close()

    plan = {k: c[k] for k in ("horizon", "num_samples", "iterations", "context_frames")}
    # The goal distance is measured at the model's resolution (the export's manifest).
    plan["resolution"] = json.loads(manifest.read_text())["resolution"]
    with domain_id() as domain:  # a free DDS domain on this machine, so other ROS graphs do not cross-talk
        summary = run(str(cfg.out), (c.seed, c.episode), goal_task, int(c.max_steps), plan,
                      Path(cfg.output_dir) / "demo" / "closed_loop", Path(config_dir()) / "ros" / "world_model.yaml",
                      domain)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
