"""Simulate one RT-1-style episode: scene, scripted commands at 3 Hz, head-camera frames.

The result is one example in the `fractal20220817_data` feature structure (images as
JPEG bytes), so the TFDS writer stores it unchanged. RLDS convention: step t holds the
observation seen at t and the action chosen after seeing it; the last step's action is a
terminate command with zero motion.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from genie_robot.sim.controller import ScriptedController, plan_segments
from genie_robot.sim.robot import CONTROL_HZ, SimRobot, quat, rot_to_rpy

__all__ = ["CONTROL_HZ", "encode_jpeg", "simulate_episode"]


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def simulate_episode(seed: int, index: int, min_steps: int, max_steps: int, jpeg_quality: int | None = 95,
                     scene: str = "default") -> dict:
    """Run episode `index` of the dataset seeded `seed`; deterministic in (seed, index, scene).

    Frames are JPEG bytes at `jpeg_quality`, or the rendered uint8 arrays with `jpeg_quality=None`
    (the bag recorder's raw camera topic)."""
    robot, rng = SimRobot.start(seed, index, scene)
    params = robot.params
    n_steps = int(rng.integers(min_steps, max_steps + 1))
    segments = plan_segments(rng, params.objects, params.table_height, n_steps)
    controller = ScriptedController(rng, segments)
    min_dist = {i: np.inf for i in range(len(params.objects))}

    steps = []
    with robot:
        for t in range(n_steps):
            state = robot.observe()
            last = t == n_steps - 1
            goal = controller.current_goal()
            cmd = controller.command(state.ee_pos)
            if last:
                cmd.world_vector[:] = 0.0
                cmd.rotation_delta[:] = 0.0
                cmd.gripper = 0.0
            # Recorded is what is actually commanded: the displacement after the workspace clip.
            done = robot.limit(cmd.world_vector, cmd.rotation_delta, cmd.gripper)
            steps.append({
                "image": state.image if jpeg_quality is None else encode_jpeg(state.image, jpeg_quality),
                "ee_pos": state.ee_pos, "ee_rot": state.ee_rot, "goal": goal,
                "target_rot": state.target_rot,
                "gripper_closed": state.gripper_closed,
                "gripper_commanded": state.gripper_commanded,
                "world_vector": done.world_vector, "rotation_delta": done.rotation_delta,
                "gripper_action": done.gripper, "is_last": last,
            })
            if last:
                break
            robot.execute(done)
            for i in min_dist:
                min_dist[i] = min(min_dist[i], float(np.linalg.norm(robot.ee_pos - robot.object_pos(i))))

    first_task = next((s for s in segments if s.kind != "random"), None)
    if first_task is None:
        success = True
    elif first_task.kind == "reach":
        success = min_dist[first_task.target] < 0.06
    else:
        i = first_task.target
        success = bool(np.linalg.norm(robot.object_pos(i)[:2] - robot.object_start[i][:2]) > 0.05)
    instruction = first_task.instruction if first_task else "move the arm around"
    return _to_rt1_example(steps, instruction, success, robot.bounds, robot.start_quat, params.table_height, params,
                           first_task)


def _to_rt1_example(steps, instruction, success, bounds, start_quat, table_z, params, task) -> dict:
    """Lay the episode out exactly as `fractal20220817_data` stores one example."""
    zeros = np.zeros
    workspace = np.concatenate([bounds, zeros((1, 3))]).astype(np.float32)
    out_steps = []
    for s in steps:
        to_go = (s["goal"] - s["ee_pos"]) if s["goal"] is not None else zeros(3)
        rot_to_go = rot_to_rpy(s["target_rot"] @ s["ee_rot"].T)
        out_steps.append({
            "action": {
                "world_vector": np.asarray(s["world_vector"], np.float32),
                "rotation_delta": np.asarray(s["rotation_delta"], np.float32),
                "gripper_closedness_action": np.array([s["gripper_action"]], np.float32),
                "base_displacement_vector": zeros(2, np.float32),
                "base_displacement_vertical_rotation": zeros(1, np.float32),
                # RT-1's one-hot: [terminate, continue, unused].
                "terminate_episode": np.array([1, 0, 0] if s["is_last"] else [0, 1, 0], np.int32),
            },
            "is_first": len(out_steps) == 0,
            "is_last": s["is_last"],
            "is_terminal": s["is_last"],
            "reward": np.float32(1.0 if (s["is_last"] and success) else 0.0),
            "observation": {
                "image": s["image"],
                "natural_language_instruction": instruction,
                # No sentence encoder offline: left zero rather than invented.
                "natural_language_embedding": zeros(512, np.float32),
                "base_pose_tool_reached": np.concatenate([s["ee_pos"], quat(s["ee_rot"])]).astype(np.float32),
                "gripper_closed": np.array([np.clip(s["gripper_closed"], 0, 1)], np.float32),
                "gripper_closedness_commanded": np.array([s["gripper_commanded"]], np.float32),
                "height_to_bottom": np.array([s["ee_pos"][2] - table_z], np.float32),
                "vector_to_go": np.asarray(to_go, np.float32),
                "rotation_delta_to_go": rot_to_go.astype(np.float32),
                "orientation_start": start_quat.astype(np.float32),
                "workspace_bounds": workspace,
                "src_rotation": zeros(4, np.float32),
                "orientation_box": zeros((2, 3), np.float32),
                "robot_orientation_positions_box": zeros((3, 3), np.float32),
            },
        })
    return {
        "steps": out_steps,
        "aspects": {
            "already_success": False, "feasible": True, "has_aspects": True,
            "success": bool(success), "undesirable": False,
        },
        "attributes": {
            "collection_mode": 0, "collection_mode_name": "scripted",
            "data_type": 0, "data_type_name": "sim",
            "env": 0, "env_name": "genie_robot_tabletop",
            "location": 0, "location_name": "",
            "objects_family": len(params.objects), "objects_family_name": "primitives",
            "task_family": {"reach": 1, "push": 2}.get(task.kind if task else "", 0),
            "task_family_name": task.kind if task else "random",
        },
    }


