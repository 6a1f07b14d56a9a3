"""sim_robot_node over real DDS: the MuJoCo Google Robot as a ROS 2 robot, driven by a client process that
imports only ROS and genie_robot_interfaces; and the control loop's pieces in-process on the same sim."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

VENV_BIN = Path(sys.executable).parent

CLIENT = textwrap.dedent("""
    import json, math, sys, time
    import numpy as np
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import Image, JointState
    from genie_robot_interfaces.msg import ExecutedAction, RobotAction
    from genie_robot_interfaces.srv import ResetScene
    rclpy.init()
    node = rclpy.create_node("client")
    reset = node.create_client(ResetScene, "/sim_robot_node/reset")
    assert reset.wait_for_service(timeout_sec=60)
    got = {"image": [], "pose": [], "joints": [], "executed": []}
    node.create_subscription(Image, "/image", lambda m: got["image"].append(m), 50)
    node.create_subscription(PoseStamped, "/ee_pose", lambda m: got["pose"].append(m), 50)
    node.create_subscription(JointState, "/joint_states", lambda m: got["joints"].append(m), 50)
    node.create_subscription(ExecutedAction, "/sim_robot_node/executed", lambda m: got["executed"].append(m), 50)
    pub = node.create_publisher(RobotAction, "/action", 10)
    sec = lambda h: h.stamp.sec + h.stamp.nanosec * 1e-9

    def call(req, timeout=60):
        fut = reset.call_async(req)
        rclpy.spin_until_future_complete(node, fut, timeout_sec=timeout)
        assert fut.done(), "no answer"
        return fut.result()

    def spin_until(pred, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline and not pred():
            rclpy.spin_once(node, timeout_sec=0.05)
        return pred()

    # Until the server has matched this client's response reader, Fast DDS drops its answers (see
    # test_ros_node.py): the first, refused request is asked until answered.
    out = {}
    for _ in range(10):
        fut = reset.call_async(ResetScene.Request(seed=3, episode=0, scene="moon"))
        rclpy.spin_until_future_complete(node, fut, timeout_sec=5)
        if fut.done():
            break
        reset.remove_pending_request(fut)
    r = fut.result()
    out["bad_scene"] = [r.success, r.message]
    r = call(ResetScene.Request(seed=-5, episode=0))
    out["bad_seed"] = [r.success, r.message]
    # Subscriptions matched before the reset that is checked: discovery first.
    assert spin_until(lambda: pub.get_subscription_count() > 0 and reset.service_is_ready())
    time.sleep(1.0)
    r = call(ResetScene.Request(seed=1000, episode=1, scene=""))
    out["reset"] = {"success": r.success, "message": r.message, "size": [r.image.height, r.image.width],
                    "encoding": r.image.encoding, "frame": r.ee_pose.header.frame_id,
                    "ee": [r.ee_pose.pose.position.x, r.ee_pose.pose.position.y, r.ee_pose.pose.position.z],
                    "gripper": r.gripper_closed}
    np.save(sys.argv[1], np.frombuffer(bytes(r.image.data), np.uint8).reshape(r.image.height, r.image.width, 3))
    assert spin_until(lambda: got["pose"] and got["image"])
    start_stamp = sec(got["image"][-1].header)

    def act(wv, rd=(0, 0, 0), g=0.0, terminate=False, expect=1):
        n = len(got["executed"])
        pub.publish(RobotAction(world_vector=list(map(float, wv)), rotation_delta=list(map(float, rd)),
                                gripper_closedness_action=float(g), terminate_episode=terminate))
        spin_until(lambda: len(got["executed"]) >= n + expect, timeout=10 if expect else 3)
        time.sleep(0.3)
        rclpy.spin_once(node, timeout_sec=0.1)
        return got["executed"][n:]

    e = act([0.2, 0.0, 0.0])  # beyond the step limit (0.02 here): clipped and reported
    out["clipped"] = {"step": e[0].step, "requested": list(map(float, e[0].requested.world_vector)),
                      "executed": list(map(float, e[0].executed.world_vector)), "clipped": list(e[0].clipped),
                      "received": e[0].received}
    e = act([float("nan"), 0.0, 0.0], expect=0)  # refused: no step
    out["nan_steps"] = len(e)
    e = act([0.0, 0.02, 0.0])
    out["after_nan"] = {"step": e[0].step, "clipped": list(e[0].clipped)}
    poses = [[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in got["pose"]]
    out["ee_path"] = poses[-3:]
    out["image_stamps"] = [sec(m.header) - start_stamp for m in got["image"][-3:]]
    out["image_frame"] = got["image"][-1].header.frame_id
    out["joints"] = list(got["joints"][-1].name)
    e = act([0.0, 0.0, 0.02], terminate=True)
    out["terminate"] = {"terminate": e[0].executed.terminate_episode,
                        "wv": list(map(float, e[0].executed.world_vector))}
    e = act([0.02, 0.0, 0.0])
    out["after_terminate"] = {"wv": list(map(float, e[0].executed.world_vector)), "received": e[0].received}
    r = call(ResetScene.Request(seed=1000, episode=1, scene="default"))
    e = act([0.02, 0.0, 0.0])
    out["after_reset"] = {"step": e[0].step, "wv": list(map(float, e[0].executed.world_vector))}
    print(json.dumps(out))
""")


@pytest.fixture()
def sim_node(ros_env):
    proc = subprocess.Popen(
        [str(VENV_BIN / "sim_robot_node"), "--ros-args", "-p", "rate_hz:=0.0", "-p", "height:=64", "-p", "width:=80",
         "-p", "max_world_vector:=0.02", "-p", "seed:=1000", "-p", "episode:=0"],
        env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode in (0, -15), out


def test_sim_robot_node_resets_executes_clips_refuses_and_terminates(sim_node, ros_env, tmp_path):
    from genie_robot.sim.service import SimProcess

    r = subprocess.run([sys.executable, "-c", CLIENT, str(tmp_path / "reset.npy")], env=ros_env,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["bad_scene"][0] is False and "unknown scene family 'moon'" in out["bad_scene"][1]
    assert out["bad_seed"][0] is False and "seeds are integers" in out["bad_seed"][1]
    reset = out["reset"]
    assert reset["success"] and reset["size"] == [64, 80] and reset["encoding"] == "rgb8"
    assert reset["frame"] == "base_link" and reset["gripper"] < 0.05
    # The reset's frame and pose are the scene's start state, as the data generator renders it.
    # (In a child process: Mesa's EGL renderer segfaults in a process that has loaded TensorFlow, as the test
    # process may have.)
    with SimProcess(64, 80) as sim:
        state = sim.reset(1000, 1)
    np.testing.assert_array_equal(np.load(tmp_path / "reset.npy"), state.image)
    np.testing.assert_allclose(reset["ee"], state.ee_pos, atol=1e-6)
    c = out["clipped"]
    assert c["step"] == 1 and c["received"] and c["requested"][0] == pytest.approx(0.2)
    assert c["executed"][0] == pytest.approx(0.02) and c["clipped"] == ["world_vector: step limit 0.02"]
    assert out["nan_steps"] == 0 and out["after_nan"] == {"step": 2, "clipped": []}
    # Synchronous mode: one step per action, stamped at the simulated 3 Hz.
    np.testing.assert_allclose(out["image_stamps"], [0.0, 1 / 3, 2 / 3], atol=1e-6)
    path = np.array(out["ee_path"])
    assert path[1, 0] - path[0, 0] > 0.005 and path[2, 1] - path[1, 1] > 0.005  # +x, then +y (tracking lags)
    assert out["image_frame"] == "head_camera_optical" and "joint_finger_left" in out["joints"]
    assert out["terminate"] == {"terminate": True, "wv": [0.0, 0.0, 0.0]}
    assert out["after_terminate"]["wv"] == [0.0, 0.0, 0.0] and out["after_terminate"]["received"]
    assert out["after_reset"]["step"] == 1 and out["after_reset"]["wv"][0] == pytest.approx(0.02)


def test_the_control_loop_pieces_on_the_sim(tmp_path):
    """Tasks replay to their own target, holding still stays at the start, a failing policy stops the robot."""
    from genie_robot.control.loop import HoldPolicy, ReplayPolicy, run_episode
    from genie_robot.control.tasks import SimRobotPort
    from genie_robot.sim.service import SimProcess

    port = SimRobotPort(SimProcess(64, 80))
    task = port.service.goal_task(2000, 0, 3)
    assert task.actions.shape == (3, 7) and task.distance > 0.02 and task.goal_image.shape == (64, 80, 3)
    replay = run_episode(port, ReplayPolicy(task.actions), port.reset(2000, 0), task.goal_image, 3, (64, 80))
    assert replay.reason == "budget" and np.linalg.norm(replay.final_ee_pos - task.goal_ee) < 1e-9
    np.testing.assert_array_equal(replay.frames[-1], task.goal_image)
    assert replay.goal_mse[-1] == 0.0 and replay.goal_mse[0] > 0
    # The goal is the frame the dataset's episode shows at that step (raw, before JPEG), its actions the dataset's.
    from genie_robot.sim.writer import simulate_episodes

    _, episode = next(simulate_episodes(2000, [0], 26, 34, None))
    with SimProcess() as full:
        task_full = full.goal_task(2000, 0, 3)
    np.testing.assert_array_equal(task_full.goal_image, episode["steps"][3]["observation"]["image"])
    np.testing.assert_allclose(task_full.actions[:, :3],
                               [s["action"]["world_vector"] for s in episode["steps"][:3]], atol=1e-7)
    hold = run_episode(port, HoldPolicy(), port.reset(2000, 0), task.goal_image, 2, (64, 80))
    assert np.linalg.norm(hold.final_ee_pos - task.start_ee) < 2e-3

    class Failing:
        name = "failing"

        def decide(self, context, goal, step):
            if step == 1:
                raise TimeoutError("plan timed out")
            return ReplayPolicy(task.actions).decide(context, goal, step)

    ep = run_episode(port, Failing(), port.reset(2000, 0), task.goal_image, 3, (64, 80))
    assert ep.reason == "failed" and "step 1: TimeoutError: plan timed out" in ep.message and ep.steps == 1
    assert port.service.terminated  # stopped: the robot holds until the next reset

    class Silent(SimRobotPort):  # a robot that stops reporting its steps
        def act(self, action):
            raise RuntimeError("no executed step within 10 s")

    silent = Silent(SimProcess(64, 80))
    ep = run_episode(silent, ReplayPolicy(task.actions), silent.reset(2000, 0), task.goal_image, 3, (64, 80))
    assert ep.reason == "failed" and "the robot: RuntimeError: no executed step" in ep.message and ep.steps == 0
    assert silent.service.terminated
    silent.service.close()
    with pytest.raises(ValueError, match="goal image must be uint8"):
        run_episode(port, HoldPolicy(), port.reset(2000, 0), task.goal_image[..., 0], 2, (64, 80))
    port.service.close()
