"""world_model_node over real DDS: a node process on the exported tiny model, a camera process
playing a sim episode, and client processes that import only ROS and genie_robot_interfaces."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

CAMERA = textwrap.dedent("""
    import sys, time, numpy as np, rclpy
    from sensor_msgs.msg import Image
    frames = np.load(sys.argv[1])  # [T, H, W, 3] uint8: a sim episode at camera resolution
    period = 1.0 / float(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node("camera")
    pub = node.create_publisher(Image, "image", 10)
    i = 0
    while rclpy.ok():
        f = frames[i % len(frames)][..., ::-1]  # played as bgr8: the node converts
        msg = Image(height=f.shape[0], width=f.shape[1], encoding="bgr8", step=f.shape[1] * 3,
                    data=np.ascontiguousarray(f).tobytes())
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = "head_camera_optical"
        pub.publish(msg)
        i += 1
        time.sleep(period)
""")

# The client imports nothing of this project but its interface package (the public API).
CLIENT_PRELUDE = textwrap.dedent("""
    import json, sys, threading, time
    import rclpy
    from rclpy.action import ActionClient
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    from diagnostic_msgs.msg import DiagnosticArray
    from genie_robot_interfaces.srv import Rollout, InferActions
    from genie_robot_interfaces.action import Plan, RolloutAction
    rclpy.init()
    node = rclpy.create_node("client")
    rollout = node.create_client(Rollout, "/world_model_node/rollout")
    infer = node.create_client(InferActions, "/world_model_node/infer_actions")
    plan = ActionClient(node, Plan, "/world_model_node/plan")
    assert rollout.wait_for_service(timeout_sec=30) and infer.wait_for_service(timeout_sec=30)
    assert plan.wait_for_server(timeout_sec=30)

    def done(fut, timeout=60):
        rclpy.spin_until_future_complete(node, fut, timeout_sec=timeout)
        assert fut.done(), "no answer"
        return fut.result()

    # Until the server has matched this client's response reader, Fast DDS drops its answers (it
    # waits 100 ms, then rclpy warns "failed to send response (timeout)"): with many processes
    # starting on 2 cores, discovery can take longer. So a first, cheap question is asked until
    # answered; every later request must be answered the first time. Returns the answers lost.
    def first_contact(client, request, tries=10, timeout=5.0):
        for lost in range(tries):
            fut = client.call_async(request)
            rclpy.spin_until_future_complete(node, fut, timeout_sec=timeout)
            if fut.done():
                return lost
            client.remove_pending_request(fut)
        raise AssertionError(f"none of {tries} first requests was answered")

    lost_first_answers = (first_contact(rollout, Rollout.Request(num_candidates=0))  # answered with an error
                          + first_contact(infer, InferActions.Request()))

    def image(h=16, w=20, encoding="rgb8", fill=90):
        ch = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "16UC1": 2}[encoding]
        return Image(height=h, width=w, encoding=encoding, step=w * ch, data=bytes([fill]) * (h * w * ch))

    def call_rollout(**kw):
        req = Rollout.Request(**{"latent_actions": [1, 2], "num_candidates": 1, "horizon": 2, "maskgit_steps": 3,
                                 **kw})
        return done(rollout.call_async(req))
    out = {}
""")

NO_CAMERA = CLIENT_PRELUDE + textwrap.dedent("""
    r = call_rollout()
    out["no_camera"] = [r.success, r.message]
    r = done(infer.call_async(InferActions.Request(frames=[image(), image(fill=10)])))
    out["infer_without_camera"] = [r.success, list(r.latent_actions)]
    print(json.dumps(out))
""")

MAIN = CLIENT_PRELUDE + textwrap.dedent("""
    status = []
    node.create_subscription(String, "/world_model_node/status", lambda m: status.append(json.loads(m.data)), 10)
    deadline = time.time() + 30
    while time.time() < deadline and not (status and status[-1]["buffer"] >= 3):
        rclpy.spin_once(node, timeout_sec=0.2)
    out["status"] = status[-1]

    r = call_rollout(latent_actions=[0, 1, 2, 3, 4, 5], num_candidates=3, horizon=2)  # camera context
    out["rollout"] = [r.success, len(r.frames), r.frames[0].encoding, r.frames[0].height, r.frames[0].width,
                      len(r.frames[0].data), r.inference_ms > 0]
    sec = lambda t: t.sec + t.nanosec * 1e-9  # noqa: E731
    out["rollout_stamps"] = {"context": [sec(t) for t in r.context_stamps],
                             "frames": [sec(f.header.stamp) for f in r.frames],
                             "frame_ids": sorted({f.header.frame_id for f in r.frames}),
                             "now": node.get_clock().now().nanoseconds * 1e-9}
    sent = [image(fill=f) for f in (10, 20, 30)]  # a request's own context, stamped 0.2 s apart
    for i, m in enumerate(sent):
        m.header.stamp.sec, m.header.stamp.nanosec, m.header.frame_id = 1000, 200_000_000 * i, "wrist"
    r = call_rollout(context=sent, latent_actions=[1, 2, 3], horizon=3)
    out["sent_stamps"] = {"context": [sec(t) for t in r.context_stamps],
                          "frames": [sec(f.header.stamp) for f in r.frames],
                          "frame_ids": sorted({f.header.frame_id for f in r.frames})}
    r = done(infer.call_async(InferActions.Request(frames=[image(120, 160, "rgba8", 5), image(120, 160, "mono8", 80),
                                                           image(120, 160, fill=200)])))
    out["infer"] = [r.success, len(r.latent_actions), max(r.latent_actions) < 8]

    feedback = []
    goal = Plan.Goal(goal=image(fill=120), horizon=2, num_samples=4, iterations=3, seed=1)
    handle = done(plan.send_goal_async(goal, feedback_callback=lambda f: feedback.append(f.feedback.iteration)))
    res = done(handle.get_result_async()).result
    out["plan"] = [res.success, len(res.latent_actions), len(res.predicted_frames), len(res.robot_actions),
                   res.cost >= 0, feedback]
    out["plan_stamps"] = {"context": [sec(t) for t in res.context_stamps],
                          "frames": [sec(f.header.stamp) for f in res.predicted_frames],
                          "frame_ids": sorted({f.header.frame_id for f in res.predicted_frames})}

    bad = {
        "encoding": dict(context=[image(encoding="16UC1")]),
        "data_length": dict(context=[Image(height=16, width=20, encoding="rgb8", step=60, data=bytes(10))]),
        "zero_size": dict(context=[Image(height=0, width=20, encoding="rgb8", step=60, data=b"")]),
        "actions_length": dict(latent_actions=[1, 2, 3]),
        "action_id": dict(latent_actions=[1, 8]),
        "candidates_zero": dict(num_candidates=0, latent_actions=[]),
        "candidates_limit": dict(num_candidates=9, latent_actions=[0] * 18),
        "horizon_zero": dict(horizon=0, latent_actions=[]),
        "horizon_limit": dict(horizon=7, latent_actions=[0] * 7),
        "nan_temperature": dict(temperature=float("nan")),
        "context_limit": dict(context=[image()] * 7),
        "two_cameras": dict(context=[image(), image(24, 20)]),
    }
    for name, kw in bad.items():
        r = call_rollout(**kw)
        ok = call_rollout()  # the node answers a valid request right after
        out["bad_" + name] = [r.success, r.message, ok.success]
    handle = done(plan.send_goal_async(Plan.Goal(goal=Image(), horizon=2, num_samples=4, iterations=2)))
    res = done(handle.get_result_async())
    out["bad_plan_goal"] = [res.result.success, res.result.message]

    # Cancel: a long plan, cancelled after its first feedback.
    feedback = []
    goal = Plan.Goal(goal=image(fill=50), horizon=4, num_samples=8, iterations=60, seed=2)
    handle = done(plan.send_goal_async(goal, feedback_callback=lambda f: feedback.append(f.feedback.iteration)))
    while not feedback:
        rclpy.spin_once(node, timeout_sec=0.1)
    done(handle.cancel_goal_async())
    res = done(handle.get_result_async())
    out["cancel"] = [res.status, res.result.success, res.result.message, len(feedback) < 60]

    # RolloutAction: feedback per imagined frame; 8 goals in flight while the camera keeps coming; the first
    # and the last cancelled (running and queued), each within one MaskGIT step.
    ract = ActionClient(node, RolloutAction, "/world_model_node/rollout_action")
    assert ract.wait_for_server(timeout_sec=30)
    sent = [image(fill=f) for f in (10, 20)]
    for i, m in enumerate(sent):
        m.header.stamp.sec, m.header.stamp.nanosec, m.header.frame_id = 2000, 200_000_000 * i, "wrist"
    fb = []
    handle = done(ract.send_goal_async(RolloutAction.Goal(context=sent, latent_actions=[1, 2, 3, 4] * 2,
                                                          num_candidates=2, horizon=4, maskgit_steps=3),
                                       feedback_callback=lambda f: fb.append(f.feedback)))
    res = done(handle.get_result_async()).result
    out["rollout_action"] = {"result": [res.success, len(res.frames), [sec(t) for t in res.context_stamps]],
                             "feedback": [[f.step, f.horizon, len(f.frames), sec(f.frames[0].header.stamp),
                                           f.frames[0].header.frame_id, f.elapsed_ms > 0] for f in fb]}
    feedback = {i: [] for i in range(8)}
    goals = [done(ract.send_goal_async(RolloutAction.Goal(latent_actions=[i % 8] * 48, num_candidates=8, horizon=6,
                                                          maskgit_steps=40, seed=i),
                                       feedback_callback=lambda f, i=i: feedback[i].append(f.feedback.step)))
             for i in range(8)]
    results = [g.get_result_async() for g in goals]
    while not feedback[0]:
        rclpy.spin_once(node, timeout_sec=0.05)
    cancels = [goals[0].cancel_goal_async(), goals[7].cancel_goal_async()]
    status.clear()
    ages = []
    while not all(r.done() for r in results):
        rclpy.spin_once(node, timeout_sec=0.1)
        ages += [s["camera_age_s"] for s in status]
        status.clear()
    out["in_flight"] = {"status": [r.result().status for r in results],
                        "messages": [results[0].result().result.message, results[7].result().result.message],
                        "steps_0": feedback[0], "steps_7": feedback[7], "max_camera_age_s": max(ages),
                        "reports": len(ages), "cancels": [done(c).return_code for c in cancels]}

    # Parameters, as `ros2 param set` / `describe` send them: live ones apply, the rest are refused with why.
    from rcl_interfaces.srv import DescribeParameters, SetParameters
    from rclpy.parameter import Parameter
    set_params = node.create_client(SetParameters, "/world_model_node/set_parameters")
    describe = node.create_client(DescribeParameters, "/world_model_node/describe_parameters")
    def set_param(name, value):
        msg = Parameter(name, value=value).to_parameter_msg()
        r = done(set_params.call_async(SetParameters.Request(parameters=[msg])))
        return [r.results[0].successful, r.results[0].reason]
    out["params"] = {label: set_param(name, value) for label, name, value in [
        ("steps", "maskgit_steps", 7), ("temperature", "temperature", 0.7), ("rate", "frame_rate", 4.0),
        ("context", "context_frames", 3), ("steps_zero", "maskgit_steps", 0), ("temperature_neg", "temperature", -1.0),
        ("context_99", "context_frames", 99), ("context_window", "context_frames", 6), ("queue", "max_queue", 4),
        ("model_dir", "model_dir", "/elsewhere"), ("plan_steps", "plan_maskgit_steps", 3),
        ("plan_context", "plan_context_frames", 3), ("plan_context_window", "plan_context_frames", 5)]}
    d = done(describe.call_async(DescribeParameters.Request(names=["maskgit_steps", "frame_rate", "max_queue"])))
    out["describe"] = [[x.read_only, [(r.from_value, r.to_value) for r in x.integer_range],
                        [(r.from_value, r.to_value) for r in x.floating_point_range]] for x in d.descriptors]
    status.clear()
    while not status:
        rclpy.spin_once(node, timeout_sec=0.2)
    out["status_after_params"] = {k: status[-1][k] for k in ("maskgit_steps", "temperature", "frame_rate",
                                                              "context_frames", "plan_maskgit_steps",
                                                              "plan_context_frames")}
    r = call_rollout(maskgit_steps=0)  # the node's default: now 7 steps
    out["rollout_after_params"] = r.success

    # /diagnostics after all of the above: the next report counts it.
    diagnostics = []
    node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    deadline = time.time() + 10
    while time.time() < deadline and len(diagnostics) < 2:
        rclpy.spin_once(node, timeout_sec=0.2)
    d = diagnostics[-1].status[0]
    out["diagnostics"] = {"name": d.name, "level": int.from_bytes(d.level, "little"), "message": d.message,
                          "hardware_id": d.hardware_id, "values": {kv.key: kv.value for kv in d.values}}
    print(json.dumps(out))
""")

@pytest.fixture()
def node(exported, ros_env, tmp_path):
    """The node on the tiny export, started with configs/ros/world_model.yaml (limits tightened)."""
    _, export = exported
    proc = subprocess.Popen(
        [str(VENV_BIN / "world_model_node"), "--ros-args", "--params-file", str(REPO / "configs/ros/world_model.yaml"),
         "-p", f"model_dir:={export}", "-p", "max_candidates:=8", "-p", "max_horizon:=6", "-p", "max_context:=6",
         "-p", "frame_rate:=5.0", "-p", "maskgit_steps:=4"],
        env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    proc.terminate()
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode in (0, -15), out  # stops cleanly on SIGTERM


def _client(script: str, env: dict, *args: str, timeout: int = 240) -> dict | list:
    r = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture()
def camera(sim_dataset, ros_env, tmp_path):
    """Starts a process that plays one simulated episode (256x320) as the camera."""
    import tensorflow_datasets as tfds

    ds = tfds.builder_from_directory(str(sim_dataset)).as_dataset(split="train")
    episode = next(iter(ds.take(1)))
    frames = np.stack([s["observation"]["image"].numpy() for s in episode["steps"]])
    np.save(tmp_path / "episode.npy", frames)
    procs = []

    def start(hz: float = 10.0):
        procs.append(subprocess.Popen([sys.executable, "-c", CAMERA, str(tmp_path / "episode.npy"), str(hz)],
                                      env=ros_env))

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=20)


def test_node_serves_rollout_infer_actions_and_plan_and_survives_bad_input(node, camera, ros_env):
    before = _client(NO_CAMERA, ros_env)
    assert before["no_camera"][0] is False and "no camera frame received yet" in before["no_camera"][1]
    assert before["infer_without_camera"][0] is True and len(before["infer_without_camera"][1]) == 1
    camera()
    out = _client(MAIN, ros_env)
    assert out["status"]["provider"] == "CPUExecutionProvider" and out["status"]["buffer"] >= 3
    assert out["rollout"] == [True, 6, "rgb8", 16, 20, 16 * 20 * 3, True]
    assert out["infer"] == [True, 2, True]
    assert out["plan"] == [True, 2, 2, 0, True, [1, 2, 3]]
    # Stamps: each predicted frame is the last context frame's time plus its step at the model's rate
    # (frame_rate 5: 0.2 s), in the camera's frame; the response lists the context frames' stamps.
    st = out["rollout_stamps"]
    assert len(st["context"]) >= 3 and st["context"] == sorted(st["context"])
    assert st["frame_ids"] == ["head_camera_optical"]
    assert 0 < st["now"] - st["context"][-1] < 30
    assert st["frames"] == pytest.approx([st["context"][-1] + 0.2 * k for k in (1, 2)] * 3, abs=1e-6)
    sent = out["sent_stamps"]
    assert sent["context"] == pytest.approx([1000.0, 1000.2, 1000.4]) and sent["frame_ids"] == ["wrist"]
    assert sent["frames"] == pytest.approx([1000.6, 1000.8, 1001.0], abs=1e-6)
    plan = out["plan_stamps"]
    assert plan["frame_ids"] == ["head_camera_optical"]
    assert plan["frames"] == pytest.approx([plan["context"][-1] + 0.2 * k for k in (1, 2)], abs=1e-6)
    # With at least 3 camera frames buffered, a horizon-2 plan on the tiny model (window 4) keeps the newest 2:
    # what fits beside its horizon (plan_context_frames 0), so its rollouts never slide the window.
    assert len(plan["context"]) == 2, plan
    # RolloutAction: a feedback message per horizon step with that step's frame of each candidate, stamped.
    ra = out["rollout_action"]
    assert ra["result"] == [True, 8, pytest.approx([2000.0, 2000.2])]
    assert [f[:3] for f in ra["feedback"]] == [[k, 4, 2] for k in (1, 2, 3, 4)]
    assert [f[3] for f in ra["feedback"]] == pytest.approx([2000.2 + 0.2 * k for k in (1, 2, 3, 4)], abs=1e-6)
    assert all(f[4] == "wrist" and f[5] for f in ra["feedback"])
    # 8 in flight: the cancelled running one stopped within a MaskGIT step of its cancel (after its first frame,
    # never all six), the cancelled queued one never ran, the rest finished; the camera stayed fresh throughout.
    fl = out["in_flight"]
    assert fl["status"] == [5] + [4] * 6 + [5], fl  # 5: CANCELED, 4: SUCCEEDED
    assert fl["messages"][0].startswith("rollout cancelled at step ") and len(fl["steps_0"]) < 6, fl
    assert fl["messages"][1] == "rollout cancelled before it started" and fl["steps_7"] == [], fl
    assert fl["reports"] > 0 and fl["max_camera_age_s"] < 1.0, fl
    # Parameters: ranges and read-only flags as declared; live ones apply to the next request.
    prm = out["params"]
    assert all(prm[k] == [True, ""] for k in ("steps", "temperature", "rate", "context", "plan_steps",
                                               "plan_context")), prm
    for k in ("steps_zero", "temperature_neg", "context_99"):
        assert not prm[k][0] and "out of range" in prm[k][1], prm[k]
    assert prm["context_window"] == [False, "context_frames 6 exceeds the model's window of 4 frames"]
    assert prm["plan_context_window"] == [False, "plan_context_frames 5 exceeds the model's window of 4 frames"]
    assert not prm["queue"][0] and "read-only" in prm["queue"][1]
    assert not prm["model_dir"][0] and "deactivate and clean up the node, set model_dir" in prm["model_dir"][1]
    assert out["describe"] == [[False, [[1, 256]], []], [False, [], [[0.1, 100.0]]], [True, [[1, 1024]], []]]
    assert out["status_after_params"] == {"maskgit_steps": 7, "temperature": 0.7, "frame_rate": 4.0,
                                          "context_frames": 3, "plan_maskgit_steps": 3, "plan_context_frames": 3}
    assert out["rollout_after_params"]
    # /diagnostics: what a robot monitor shows, from the same snapshot as ~/status.
    d = out["diagnostics"]
    assert d["name"] == "/world_model_node: world model" and d["level"] == 0 and d["hardware_id"] == "tiny"
    v = d["values"]
    assert v["engine"] == "onnx" and v["provider"] == "CPUExecutionProvider" and v["model"].endswith("tiny")
    assert 2 < float(v["camera_rate_hz"]) < 15 and float(v["camera_age_s"]) < 1.0  # the camera plays at 10 Hz
    assert int(v["served"]) >= 16 and int(v["failed"]) >= 14  # the 13 bad rollouts, the bad goal, the cancel
    assert json.loads(v["failed_by_endpoint"])["rollout"] >= 12
    assert 0 < float(v["latency_p50_ms"]) <= float(v["latency_p99_ms"]) and float(v["rss_mb"]) > 50
    assert d["message"].startswith("serving: ")
    expected = {
        "encoding": "unsupported encoding '16UC1'", "data_length": "data has 10 bytes, expected step * height",
        "zero_size": "height and width must be > 0", "actions_length": "latent_actions has 3 ids, expected",
        "action_id": "latent action id 8 is out of range", "candidates_zero": "num_candidates must be in 1..8",
        "candidates_limit": "num_candidates must be in 1..8", "horizon_zero": "horizon must be in 1..6",
        "horizon_limit": "horizon must be in 1..6", "nan_temperature": "temperature must be a finite number",
        "context_limit": "7 context frames exceed max_context=6",
        "two_cameras": "context[1] is 24x20 but context[0] is 16x20: a request's frames must come from one camera",
    }
    for name, message in expected.items():
        success, got, then_ok = out["bad_" + name]
        assert not success and message in got and then_ok, (name, got)
    assert out["bad_plan_goal"] == [False, "goal image has no data (height, width, encoding and data are required)"]
    status, success, message, early = out["cancel"]
    assert status == 5 and not success and message == "plan cancelled" and early  # 5: GoalStatus.CANCELED


def test_node_under_load_with_a_live_camera_answers_every_request_at_sequential_throughput(reference_export,
                                                                                          ros_env, capsys):
    """genie_robot_ros.loadtest on the exported reference (the demo-size model): 8 clients x 6 rollouts while
    a camera publishes at 30 Hz, as on a robot. Every request is answered, the node's memory stays bounded,
    its newest camera frame stays fresh, and it serves about the requests per second of one client asking
    in sequence (same run, camera on). Waiting requests used to hold every executor thread, and
    rclpy's executor then spun on the callbacks queued behind them: 0.27x (docs/BENCHMARKS.md). The
    model is the reference, not the tiny one: with the tiny model's millisecond steps the engine's Python
    loop shares the GIL with the node's callbacks and 8 client processes share the 2 cores, so transport,
    not the engine, set the ratio (0.83-1.7 across runs). 8 MaskGIT steps per request: with 4, one full-suite
    run measured 0.91. 6 requests a client since the fifth release's 4.5x larger dynamics: at 20 (160 at once)
    a request took several seconds and the test passed its 15-minute limit."""
    r = subprocess.run([sys.executable, "-m", "genie_robot_ros.loadtest", str(reference_export), "--clients", "8",
                        "--requests", "6", "--camera-hz", "30", "--candidates", "2", "--horizon", "2",
                        "--maskgit-steps", "8", "-p", "frame_rate:=5.0"], env=ros_env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    with capsys.disabled():
        print(f"\nnode load: {json.dumps(out)}")
    assert out["concurrent"]["requests"] == 48 and out["node_alive"] and out["node_exit"] == 0
    # Engine work runs on one thread (RequestQueue): +4.7 MB over 160 requests (540 MB before), +20.2 and
    # +3.8 in two later runs. "after" is read once the node is idle (the least over 3 s): in flight, requests
    # swing RSS by about 100 MB, and a single reading as the last answer left gave +69 in a CI run. Run on the
    # executor's threads, each thread's malloc arena kept its buffers: +240 MB, +317 MB in a CI run.
    assert out["node_rss_mb"]["after"] - out["node_rss_mb"]["before"] < 64, out["node_rss_mb"]
    # The node keeps one camera frame per 0.2 s (frame_rate 5): under load its newest stays fresh. A starved
    # camera callback (the bug this guards) lets the age grow by the seconds a request takes; on a loaded 2-core
    # machine a fresh camera still read 1.46 s once (clean-clone make test, 2026-12-05; 0.33 s the run before).
    assert out["camera_age_s_during_load"]["reports"] > 0 and out["camera_age_s_during_load"]["max"] < 2.5
    # Issue 14 asks for 0.9x; in full-suite runs on 2 cores this measured 0.76-0.96 (1.11-1.16 run alone, and
    # on the benchmark's 25-step requests: docs/BENCHMARKS.md; 0.756 in a clean-clone run of the same code that
    # measured 0.882 an hour before). The figure is the benchmark's; the test guards the fix, with room for a
    # shared CI machine: the starved node measured 0.27x.
    assert out["throughput_ratio"] >= 0.6, out


# A planner that is not a ROS node: genie_robot.client only.
HELPER = textwrap.dedent("""
    import json, numpy as np
    from genie_robot.client import WorldModelClient, WorldModelError
    out = {}
    try:
        WorldModelClient(node="/no_such_node", connect_timeout=1)
    except TimeoutError as e:
        out["missing"] = str(e)
    rng = np.random.default_rng(0)
    ctx = [rng.integers(0, 255, (32, 40, 3), dtype=np.uint8) for _ in range(2)]
    with WorldModelClient(timeout=60) as wm:
        r = wm.rollout([[1, 2], [3, 4]], context=ctx, maskgit_steps=3)
        out["rollout"] = [list(r.frames.shape), str(r.frames.dtype), list(r.stamps.shape), len(r.context_stamps),
                          bool((r.stamps[:, 1] > r.stamps[:, 0]).all())]
        out["infer"] = wm.infer_actions(ctx + [ctx[0]]).tolist()
        fb = []
        p = wm.plan(ctx[0], context=ctx, horizon=2, num_samples=4, iterations=2, feedback=lambda i, c: fb.append(i))
        out["plan"] = [len(p.latent_actions), list(p.frames.shape), p.cost >= 0, fb]
        for name, call in [("bad_action", lambda: wm.rollout([1, 9], context=ctx)),
                           ("bad_frame", lambda: wm.rollout([1, 2], context=[np.zeros((4, 4), np.uint8)]))]:
            try:
                call()
            except (WorldModelError, ValueError) as e:
                out[name] = [type(e).__name__, str(e)]
        out["after"] = list(wm.rollout([5], context=ctx, maskgit_steps=2).frames.shape)
    print(json.dumps(out))
""")


def test_the_python_client_serves_a_planner_that_is_not_a_ros_node(node, ros_env):
    out = _client(HELPER, ros_env)
    assert "no /no_such_node/rollout within 1 s" in out["missing"]
    assert out["rollout"] == [[2, 2, 16, 20, 3], "uint8", [2, 2], 2, True]
    assert len(out["infer"]) == 2 and max(out["infer"]) < 8
    assert out["plan"] == [2, [2, 16, 20, 3], True, [1, 2]]
    assert out["bad_action"] == ["WorldModelError", "rollout: latent action id 9 is out of range: the model has 8 "
                                 "actions (ids 0..7)"]
    assert out["bad_frame"] == ["ValueError", "frames must be uint8 HxWx3 RGB arrays, got uint8 [4, 4]"]
    assert out["after"] == [1, 1, 16, 20, 3]


LIFECYCLE = CLIENT_PRELUDE + textwrap.dedent("""
    import shutil
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    reference, tiny, scratch = sys.argv[1:4]
    change = node.create_client(ChangeState, "/world_model_node/change_state")
    get_state = node.create_client(GetState, "/world_model_node/get_state")
    set_params = node.create_client(SetParameters, "/world_model_node/set_parameters")
    status = []
    node.create_subscription(String, "/world_model_node/status", lambda m: status.append(json.loads(m.data)), 10)
    T = Transition
    def transition(t):
        return done(change.call_async(ChangeState.Request(transition=Transition(id=t)))).success
    def state():
        return done(get_state.call_async(GetState.Request())).current_state.label
    def set_model_dir(path):
        msg = Parameter("model_dir", value=path).to_parameter_msg()
        return done(set_params.call_async(SetParameters.Request(parameters=[msg]))).results[0].successful
    def next_status():
        status.clear()
        while not status:
            rclpy.spin_once(node, timeout_sec=0.2)
        return status[-1]
    def rollout_size(**kw):
        r = call_rollout(context=[image(), image(fill=30)], **kw)
        return [r.success, r.frames[0].height if r.success else r.message]

    out["start"] = [state(), rollout_size(), transition(T.TRANSITION_ACTIVATE), state()]  # activate before configure
    out["configure"] = [transition(T.TRANSITION_CONFIGURE), state(), rollout_size()]
    out["activate"] = [transition(T.TRANSITION_ACTIVATE), state(), rollout_size()]

    # Model swap while a client waits for a long rollout: it is answered by the model it reached.
    long = rollout.call_async(Rollout.Request(context=[image(), image(fill=30)], latent_actions=[1] * 16,
                                              num_candidates=4, horizon=4, maskgit_steps=25))
    t0 = time.time()
    while time.time() - t0 < 1.0:
        rclpy.spin_once(node, timeout_sec=0.1)
    deactivate = change.call_async(ChangeState.Request(transition=Transition(id=T.TRANSITION_DEACTIVATE)))
    r = done(long, timeout=120)
    out["long"] = [r.success, r.frames[0].height if r.success else r.message]
    out["deactivate"] = [done(deactivate).success, state(), rollout_size()]
    out["model_dir_while_loaded"] = set_model_dir(tiny)
    out["swap"] = [transition(T.TRANSITION_CLEANUP), state(), set_model_dir(tiny), transition(T.TRANSITION_CONFIGURE),
                   transition(T.TRANSITION_ACTIVATE), state(), rollout_size(), next_status()["name"]]

    # A model_dir that vanishes between configure and activate: activate fails and says why.
    shutil.copytree(tiny, scratch)
    out["vanish"] = [transition(T.TRANSITION_DEACTIVATE), transition(T.TRANSITION_CLEANUP), set_model_dir(scratch),
                     transition(T.TRANSITION_CONFIGURE)]
    shutil.rmtree(scratch)
    out["vanish"] += [transition(T.TRANSITION_ACTIVATE), state(), rollout_size()]
    s = next_status()
    out["vanish_status"] = [s["state"], s["error"]]
    out["recover"] = [transition(T.TRANSITION_CLEANUP), set_model_dir(reference), transition(T.TRANSITION_CONFIGURE),
                      transition(T.TRANSITION_ACTIVATE), state(), rollout_size()]
    print(json.dumps(out))
""")


def test_lifecycle_configures_activates_and_swaps_the_model_while_a_client_waits(exported, reference_export,
                                                                                   ros_env, tmp_path):
    """autostart:=false: the node waits unconfigured; transitions out of order are refused; configure loads,
    activate serves; deactivate lets a running request finish on its model, then cleanup, a new model_dir,
    configure and activate serve the new model. A model_dir removed after configure fails activate, saying
    why, and the node recovers with a good one. Requests while not active are refused with the state."""
    _, tiny = exported
    proc = subprocess.Popen(
        [str(VENV_BIN / "world_model_node"), "--ros-args", "-p", f"model_dir:={reference_export}",
         "-p", "autostart:=false", "-p", "max_horizon:=6"],
        env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = _client(LIFECYCLE, ros_env, str(reference_export), str(tiny), str(tmp_path / "vanishing"), timeout=600)
    finally:
        proc.terminate()
        log, _ = proc.communicate(timeout=30)
    assert proc.returncode in (0, -15), log
    inactive = "the world model is not active (lifecycle state: {})"
    assert out["start"][0] == "unconfigured" and out["start"][1][0] is False
    assert out["start"][1][1].startswith(inactive.format("unconfigured"))
    assert out["start"][2:] == [False, "unconfigured"]  # activate before configure: refused
    assert out["configure"][:2] == [True, "inactive"] and out["configure"][2][1].startswith(inactive.format("inactive"))
    assert out["activate"] == [True, "active", [True, 64]]  # the reference: 64x80 frames
    assert out["long"][:2] == [True, 64]  # answered by the model it reached, before the swap
    assert out["deactivate"][:2] == [True, "inactive"] and out["deactivate"][2][0] is False
    assert out["model_dir_while_loaded"] is False  # refused while a model is loaded
    assert out["swap"] == [True, "unconfigured", True, True, True, "active", [True, 16], "tiny"]
    assert out["vanish"][:4] == [True, True, True, True]
    assert out["vanish"][4:6] == [False, "inactive"] and out["vanish"][6][0] is False
    assert "no longer exists" in out["vanish"][6][1]
    assert out["vanish_status"][0] == "inactive" and "activate failed: model_dir" in out["vanish_status"][1]
    assert out["recover"] == [True, True, True, True, "active", [True, 64]]


def test_a_bad_model_dir_fails_the_start_naming_what_is_missing(ros_env, tmp_path):
    r = subprocess.run([str(VENV_BIN / "world_model_node"), "--ros-args", "-p", f"model_dir:={tmp_path}"],
                       env=ros_env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"world_model_node: cannot start: configure failed: {tmp_path} is not a genie-robot ONNX export: " \
        "manifest.json is missing" in r.stderr


def test_genie_robot_serve_runs_the_node_where_ros2_launch_is_missing(exported, ros_env, tmp_path):
    """`genie-robot serve`: the node with the parameters file and overrides, in the pip install."""
    _, export = exported
    r = subprocess.run([str(VENV_BIN / "genie-robot"), "serve", f"out={tmp_path}"], env=ros_env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "is not an export (no manifest.json)" in r.stderr
    proc = subprocess.Popen([str(VENV_BIN / "genie-robot"), "serve", f"out={export}", "serve.namespace=robot1",
                             "serve.params={frame_rate: 5.0, max_queue: 3}"], env=ros_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "world model active" in line or len(lines) > 200:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    log = "".join(lines) + rest
    assert proc.returncode == 0 and "world model active" in log, log
    assert "[robot1.world_model_node]" in log and "-p max_queue:=3" in log and "-p frame_rate:=5.0" in log, log


def test_a_compressed_camera_feeds_the_node_and_undecodable_frames_are_dropped(exported, ros_env):
    """camera_transport=compressed: JPEG CompressedImages on image/compressed (every 4th cut short) fill the
    buffer; the bad ones are dropped with a warning that says why, and requests on camera context succeed."""
    _, export = exported
    r = subprocess.run([sys.executable, "-m", "genie_robot_ros.loadtest", str(export), "--clients", "2", "--requests",
                        "4", "--camera-hz", "15", "--compressed", "--bad-every", "4", "--candidates", "2",
                        "--context", "0", "--maskgit-steps", "2", "-p", "frame_rate:=5.0"], env=ros_env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["camera"] == "jpeg" and out["concurrent"]["requests"] == 8 and out["node_exit"] == 0
    assert out["camera_age_s_during_load"]["reports"] > 0 and out["camera_age_s_during_load"]["max"] < 1.0
    assert any("dropping camera frames: camera image:" in w and "do not decode as JPEG or PNG" in w
               for w in out["node_warnings"]), out["node_warnings"]
