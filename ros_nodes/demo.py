"""The end of `make demo`: the world model as a robot would use it, over ROS 2.

Starts `world_model_node` on the exported model (with configs/ros/world_model.yaml), plays a
held-out sim clip at camera resolution as the camera (frames stamped at the model's 3 Hz),
asks the `~/plan` action for latent actions toward a later frame of that clip, saves the
plan as a GIF (left: what the camera saw, then the real future; right: the node's predicted
frames), and stops the node, which must exit cleanly.

    python -m genie_robot_ros.demo out=outputs/export/demo [data.path=...] [+ros_demo.gif=...]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

CONTEXT, AHEAD = 8, 4  # camera frames before planning; the goal is the frame AHEAD steps later


def run(export_dir: str, clip: np.ndarray, gif: Path, node_bin: Path, params: Path, domain: int) -> dict:
    import rclpy
    from rclpy.action import ActionClient
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from genie_robot.core.image import fit_image
    from genie_robot.pictures import save_gif
    from genie_robot.runtime.camera import to_rgb
    from genie_robot_interfaces.action import Plan
    from genie_robot_ros.world_model_node import image_msg

    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(domain)}
    os.environ.update(env)
    node = subprocess.Popen([str(node_bin), "--ros-args", "--params-file", str(params), "-p",
                             f"model_dir:={export_dir}"], env=env)
    rclpy.init()
    client = rclpy.create_node("genie_demo_client")
    try:
        camera = client.create_publisher(Image, "image", 10)
        status: list[dict] = []
        client.create_subscription(String, "/world_model_node/status", lambda m: status.append(json.loads(m.data)),
                                   10)
        plan = ActionClient(client, Plan, "/world_model_node/plan")
        if not plan.wait_for_server(timeout_sec=120):
            raise RuntimeError("world_model_node did not come up (see its log above)")
        deadline = time.time() + 60
        while time.time() < deadline and not (status and status[-1]["buffer"] >= CONTEXT):
            for i in range(CONTEXT):  # the camera: held-out frames, stamped 1/3 s apart
                msg = image_msg(clip[i])
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(i * 1e9 / 3), 10**9)
                camera.publish(msg)
                rclpy.spin_once(client, timeout_sec=0.05)
            rclpy.spin_once(client, timeout_sec=0.5)
        if not (status and status[-1]["buffer"] >= CONTEXT):
            raise RuntimeError(f"the node did not buffer {CONTEXT} camera frames: {status[-1:] or 'no status'}")
        goal = Plan.Goal(goal=image_msg(clip[CONTEXT - 1 + AHEAD]), horizon=AHEAD, num_samples=8, iterations=2, seed=0)
        feedback = []
        future = plan.send_goal_async(goal, feedback_callback=lambda f: feedback.append(
            (f.feedback.iteration, round(f.feedback.best_cost, 4))))
        rclpy.spin_until_future_complete(client, future, timeout_sec=60)
        result_future = future.result().get_result_async()
        rclpy.spin_until_future_complete(client, result_future, timeout_sec=600)
        res = result_future.result().result
        if not res.success:
            raise RuntimeError(f"plan failed: {res.message}")
        predicted = np.stack([to_rgb(f.encoding, f.height, f.width, f.step, f.data).transpose(2, 0, 1)
                              for f in res.predicted_frames])
        real = clip[CONTEXT - 1 : CONTEXT + AHEAD]
        real_small = np.stack([fit_image(f.transpose(1, 2, 0), predicted.shape[2:]) for f in real])
        shown = np.concatenate([real_small, np.concatenate([real_small[:1], predicted])], axis=3)
        save_gif(shown, gif, fps=2, scale=3)
        summary = {"ros_plan": str(gif), "latent_actions": list(res.latent_actions), "cost": round(res.cost, 4),
                   "feedback": feedback, "robot_actions": len(res.robot_actions) // 7, "node_status": status[-1]}
    finally:
        client.destroy_node()
        rclpy.try_shutdown()
        node.send_signal(signal.SIGINT)
        try:
            code = node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()
            code = "killed after 30 s"
    if code != 0:
        raise RuntimeError(f"world_model_node did not stop cleanly (exit {code})")
    summary["node_exit"] = code
    return summary


def main() -> int:
    from domain_coordinator import domain_id

    from genie_robot.config import config_dir, load_config, typed
    from genie_robot.data.reader import DataConfig, read_clips
    from genie_robot.data.schema import IMAGE_SHAPE

    cfg = load_config(sys.argv[1:])
    data = typed(cfg.data, DataConfig)
    h, w = IMAGE_SHAPE[:2]  # the head camera's resolution (RT-1)
    frames, _ = read_clips(replace(data, resolution=[h, w], clip_frames=CONTEXT + AHEAD, batch_size=1), "val", 1,
                           ["world_vector"])
    gif = Path(cfg.output_dir) / "demo" / "ros_plan.gif"
    node_bin = Path(sys.executable).parent / "world_model_node"
    with domain_id() as domain:  # a free DDS domain on this machine, so other ROS graphs do not cross-talk
        summary = run(str(cfg.out), frames[0], gif, node_bin, Path(config_dir()) / "ros" / "world_model.yaml", domain)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
