"""Closed-loop control over real DDS: sim_robot_node, world_model_node (the tiny export with an adapter) and
control_node in separate processes, driven by a client that imports only ROS and genie_robot_interfaces;
and `genie-robot control` in-process on the tiny run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent

CLIENT = textwrap.dedent("""
    import json, sys, time
    import rclpy
    from rclpy.action import ActionClient
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient
    from action_msgs.msg import GoalStatus
    from sensor_msgs.msg import Image
    from genie_robot_interfaces.action import Reach
    from genie_robot_interfaces.msg import ExecutedAction
    from genie_robot_interfaces.srv import ResetScene
    rclpy.init()
    node = rclpy.create_node("client")
    reset = node.create_client(ResetScene, "/sim_robot_node/reset")
    reach = ActionClient(node, Reach, "/control_node/reach")
    params = AsyncParameterClient(node, "/control_node")
    executed = []
    node.create_subscription(ExecutedAction, "/sim_robot_node/executed", executed.append, 50)
    assert reset.wait_for_service(timeout_sec=60) and reach.wait_for_server(timeout_sec=60)
    assert params.wait_for_services(timeout_sec=60)

    def wait(fut, timeout=120):
        rclpy.spin_until_future_complete(node, fut, timeout_sec=timeout)
        assert fut.done(), "no answer"
        return fut.result()

    def call_reset(episode, tries=10):  # the first answers can be lost before discovery completes (test_ros_node)
        for _ in range(tries):
            fut = reset.call_async(ResetScene.Request(seed=1000, episode=episode))
            rclpy.spin_until_future_complete(node, fut, timeout_sec=5)
            if fut.done():
                return fut.result()
            reset.remove_pending_request(fut)
        raise AssertionError("reset not answered")

    def run_goal(goal_image, max_steps, cancel_after=None):
        feedback = []
        sent = reach.send_goal_async(Reach.Goal(goal=goal_image, max_steps=max_steps),
                                     feedback_callback=lambda m: feedback.append(m.feedback))
        handle = wait(sent)
        if not handle.accepted:
            return {"accepted": False}
        result_future = handle.get_result_async()
        if cancel_after is not None:
            deadline = time.time() + 120
            while len(feedback) < cancel_after and time.time() < deadline:
                rclpy.spin_once(node, timeout_sec=0.1)
            wait(handle.cancel_goal_async())
        res = wait(result_future)
        deadline = time.time() + 1.0  # the robot's last reports
        while time.time() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        r = res.result
        return {"accepted": True, "status": res.status, "success": r.success, "reason": r.reason,
                "message": r.message, "steps": r.steps, "goal_mse": list(r.goal_mse),
                "latent_actions": list(r.latent_actions), "gif": r.gif, "feedback": len(feedback),
                "feedback_action_len": len(feedback[0].robot_action) if feedback else 0,
                "plan_len": len(feedback[0].plan) if feedback else 0}

    out = {}
    goal = call_reset(2).image  # another scene's start view: a goal image of the camera's size
    call_reset(1)
    time.sleep(0.5)
    n = len(executed)
    out["episode"] = run_goal(goal, 2)
    out["episode_executed"] = [[e.received, e.executed.terminate_episode] for e in executed[n:]]
    out["small_goal"] = run_goal(Image(height=10, width=10, encoding="rgb8", step=30, data=bytes(300)), 2)
    out["bad_encoding"] = run_goal(Image(height=64, width=80, encoding="16UC1", step=160, data=bytes(160 * 64)), 2)
    call_reset(1)
    time.sleep(0.5)
    n = len(executed)
    out["cancel"] = run_goal(goal, 50, cancel_after=1)
    out["cancel_executed_last"] = executed[-1].executed.terminate_episode if len(executed) > n else None
    out["cancel_status"] = GoalStatus.STATUS_CANCELED
    # A plan the world model refuses (more candidates than its max_candidates): the episode fails, the robot stops.
    wait(params.set_parameters([Parameter("num_samples", value=64)]))
    call_reset(1)
    time.sleep(0.5)
    n = len(executed)
    out["plan_fails"] = run_goal(goal, 3)
    out["plan_fails_executed"] = [e.executed.terminate_episode for e in executed[n:]]
    wait(params.set_parameters([Parameter("num_samples", value=4), Parameter("plan_timeout_s", value=0.001)]))
    call_reset(1)
    time.sleep(0.5)
    out["plan_times_out"] = run_goal(goal, 3)
    print(json.dumps(out))
""")


@pytest.fixture()
def control_stack(adapted, ros_env, tmp_path):
    _, export = adapted
    procs = [
        subprocess.Popen([str(VENV_BIN / "sim_robot_node"), "--ros-args", "-p", "rate_hz:=0.0", "-p", "height:=64",
                          "-p", "width:=80"], env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
        subprocess.Popen([str(VENV_BIN / "world_model_node"), "--ros-args", "-p", f"model_dir:={export}",
                          "-p", "max_candidates:=8", "-p", "plan_maskgit_steps:=2"],
                         env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
        subprocess.Popen([str(VENV_BIN / "control_node"), "--ros-args", "-r", "plan:=/world_model_node/plan",
                          "-r", "executed:=/sim_robot_node/executed", "-p", "resolution:=[16, 20]",
                          "-p", "num_samples:=4", "-p", "iterations:=1", "-p", f"gif_dir:={tmp_path / 'gifs'}"],
                         env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
    ]
    yield procs
    logs = []
    for p in procs:
        p.terminate()
        out, _ = p.communicate(timeout=30)
        logs.append(out)
    for p, out in zip(procs, logs, strict=True):
        assert p.returncode in (0, -15), out


def test_control_node_runs_an_episode_rejects_bad_goals_cancels_and_stops_on_failed_plans(control_stack, ros_env):
    r = subprocess.run([sys.executable, "-c", CLIENT], env=ros_env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    ep = out["episode"]
    assert ep["accepted"] and ep["success"] and ep["reason"] == "budget" and ep["steps"] == 2, ep
    assert ep["feedback"] == 2 and ep["feedback_action_len"] == 7 and ep["plan_len"] == 2
    assert len(ep["goal_mse"]) == 3 and len(ep["latent_actions"]) == 2 and Path(ep["gif"]).is_file()
    assert out["episode_executed"] == [[True, False], [True, False]]  # one executed step per plan
    assert out["small_goal"] == {"accepted": False} and out["bad_encoding"] == {"accepted": False}
    c = out["cancel"]
    assert c["status"] == out["cancel_status"] and c["reason"] == "cancelled" and not c["success"], json.dumps(out)
    assert 1 <= c["steps"] < 50 and out["cancel_executed_last"] is True  # the robot was stopped
    f = out["plan_fails"]
    assert f["reason"] == "failed" and not f["success"] and f["steps"] == 0
    assert "plan failed" in f["message"] and "num_samples" in f["message"], f["message"]
    assert out["plan_fails_executed"] == [True]  # nothing but the stop was sent
    t = out["plan_times_out"]
    assert t["reason"] == "failed" and "plan timed out" in t["message"] and t["steps"] == 0


def test_genie_robot_control_drives_the_sim_with_the_tiny_model(adapted, tmp_path, capsys):
    from genie_robot.cli import main

    run, _ = adapted
    out = tmp_path / "control"
    assert main(["control", f"ckpt={run}", "control.max_steps=2", "control.num_samples=4", "control.iterations=1",
                 "control.goal_steps=2", f"control.out={out}"]) == 0
    doc = json.loads((out / "episode.json").read_text())
    assert doc["reason"] == "budget" and doc["steps"] == 2 and len(doc["steps_detail"]) == 2
    step = doc["steps_detail"][0]
    assert len(step["action"]) == 7 and len(step["latent_actions"]) == 2 and step["ee_to_goal_m"] is not None
    assert doc["ee_to_goal_start_m"] > 0 and (out / "episode.gif").is_file()
    assert main(["control", f"ckpt={run}", f"control.goal={tmp_path / 'missing.png'}", f"control.out={out}"]) != 0
    assert "missing.png: no such file" in capsys.readouterr().err


def test_make_demos_closed_loop_runs_three_nodes_and_reports_the_episode(adapted, tmp_path):
    """`python -m genie_robot_ros.demo` (make demo's end) on the tiny export: an episode, its GIF, clean exits."""
    _, export = adapted
    r = subprocess.run([sys.executable, "-m", "genie_robot_ros.demo", f"out={export}", f"output_dir={tmp_path}",
                        "control.max_steps=2", "control.num_samples=4", "control.iterations=1",
                        "control.goal_steps=2"], capture_output=True, text=True, timeout=400,
                       env={**os.environ, "ROS_LOG_DIR": str(tmp_path / "log")})
    assert r.returncode == 0, r.stderr[-4000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["reason"] == "budget" and summary["steps"] == 2 and len(summary["goal_mse"]) == 3
    assert summary["node_exits"] == {"sim_robot_node": 0, "world_model_node": 0, "control_node": 0}
    assert summary["ee_to_goal_start_m"] > 0 and summary["ee_to_goal_end_m"] is not None
    assert Path(summary["closed_loop_gif"]).is_file() and "step 1: plan" in r.stdout
    bad = subprocess.run([sys.executable, "-m", "genie_robot_ros.demo", f"out={tmp_path / 'nothing'}"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "is not an exported model" in bad.stderr
