"""Simulate one RT-1-style episode: scene, scripted commands at 3 Hz, head-camera frames.

The result is one example in the `fractal20220817_data` feature structure (images as
JPEG bytes), so the TFDS writer stores it unchanged. RLDS convention: step t holds the
observation seen at t and the action chosen after seeing it; the last step's action is a
terminate command with zero motion.
"""

from __future__ import annotations

import io

import mujoco
import numpy as np
from PIL import Image

from genie_robot.data.schema import IMAGE_SHAPE
from genie_robot.sim.controller import ScriptedController, plan_segments
from genie_robot.sim.ik import ELBOW_LOW_POSTURE, FINGER_JOINTS, ArmIK
from genie_robot.sim.scene import build_model, sample_scene

CONTROL_HZ = 3.0
IMAGE_HEIGHT, IMAGE_WIDTH = IMAGE_SHAPE[:2]
FINGER_OPEN, FINGER_CLOSED = 0.01, 1.3
# Nominal gripper orientation: fingers pointing forward and down at the table.
_Z = np.array([0.35, 0.2, -0.9]) / np.linalg.norm([0.35, 0.2, -0.9])
_X = np.cross([0.0, 1.0, 0.0], _Z) / np.linalg.norm(np.cross([0.0, 1.0, 0.0], _Z))
HOME_ROT = np.stack([_X, np.cross(_Z, _X), _Z], axis=1)
MAX_TILT = 0.5  # rad the commanded orientation may drift from HOME_ROT


def _rpy_matrix(rpy: np.ndarray) -> np.ndarray:
    cr, sr = np.cos(rpy[0]), np.sin(rpy[0])
    cp, sp = np.cos(rpy[1]), np.sin(rpy[1])
    cy, sy = np.cos(rpy[2]), np.sin(rpy[2])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _rot_to_rpy(r: np.ndarray) -> np.ndarray:
    return np.array([
        np.arctan2(r[2, 1], r[2, 2]),
        np.arcsin(np.clip(-r[2, 0], -1.0, 1.0)),
        np.arctan2(r[1, 0], r[0, 0]),
    ])


def _angle_between(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.arccos(np.clip((np.trace(a.T @ b) - 1.0) / 2.0, -1.0, 1.0)))


def _quat(rot: np.ndarray) -> np.ndarray:
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, rot.flatten())
    return q


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def simulate_episode(seed: int, index: int, min_steps: int, max_steps: int, jpeg_quality: int | None = 95,
                     scene: str = "default") -> dict:
    """Run episode `index` of the dataset seeded `seed`; deterministic in (seed, index, scene).

    Frames are JPEG bytes at `jpeg_quality`, or the rendered uint8 arrays with `jpeg_quality=None`
    (the bag recorder's raw camera topic)."""
    rng = np.random.default_rng([seed, index])
    params = sample_scene(rng, scene=scene)
    model = build_model(params)
    data = mujoco.MjData(model)
    ik = ArmIK(model)
    finger_adr = [model.joint(j).qposadr[0] for j in FINGER_JOINTS]
    finger_act = [model.actuator(i).id for i in range(model.nu) if model.actuator(i).trnid[0] in
                  [model.joint(j).id for j in FINGER_JOINTS]]
    arm_act = [i for i in range(model.nu) if i not in finger_act]

    table_z = params.table_height
    bounds = np.array([[0.45, -0.45, table_z + 0.03], [0.95, 0.25, table_z + 0.35]])
    # Start from a random pose above the table.
    target_pos = rng.uniform(bounds[0] + [0.05, 0.05, 0.1], bounds[1] - [0.1, 0.05, 0.05])
    target_rot = HOME_ROT.copy()
    q, _ = ik.solve(ELBOW_LOW_POSTURE, target_pos, target_rot, iters=300)
    closed = 0.0  # episodes start with the gripper open
    data.qpos[ik.qadr] = q
    data.qpos[finger_adr] = FINGER_OPEN
    data.ctrl[arm_act] = q
    data.ctrl[finger_act] = FINGER_OPEN
    mujoco.mj_forward(model, data)
    for _ in range(100):  # settle objects on the table
        mujoco.mj_step(model, data)

    n_steps = int(rng.integers(min_steps, max_steps + 1))
    segments = plan_segments(rng, params.objects, table_z, n_steps)
    controller = ScriptedController(rng, segments)
    substeps = int(round(1.0 / CONTROL_HZ / model.opt.timestep))
    renderer = mujoco.Renderer(model, IMAGE_HEIGHT, IMAGE_WIDTH)
    site = model.site("gripper").id
    start_quat = _quat(data.site_xmat[site].reshape(3, 3))
    obj_start = [data.body(f"object{i}").xpos.copy() for i in range(len(params.objects))]
    min_dist = {i: np.inf for i in range(len(params.objects))}

    steps = []
    try:
        for t in range(n_steps):
            ee_pos = data.site_xpos[site].copy()
            ee_rot = data.site_xmat[site].reshape(3, 3).copy()
            renderer.update_scene(data, camera="head")
            image = renderer.render()
            last = t == n_steps - 1
            goal = controller.current_goal()
            cmd = controller.command(ee_pos)
            if last:
                cmd.world_vector[:] = 0.0
                cmd.rotation_delta[:] = 0.0
                cmd.gripper = 0.0
            # Record what is actually commanded: the displacement after the workspace clip.
            new_target = np.clip(target_pos + cmd.world_vector, bounds[0], bounds[1])
            cmd.world_vector = (new_target - target_pos).astype(np.float32)
            new_rot = _rpy_matrix(cmd.rotation_delta) @ target_rot
            if _angle_between(new_rot, HOME_ROT) > MAX_TILT:
                cmd.rotation_delta[:] = 0.0
                new_rot = target_rot
            finger = data.qpos[finger_adr].mean()
            steps.append({
                "image": image if jpeg_quality is None else encode_jpeg(image, jpeg_quality),
                "ee_pos": ee_pos, "ee_rot": ee_rot, "goal": goal,
                "target_rot": target_rot.copy(),
                "gripper_closed": (finger - FINGER_OPEN) / (FINGER_CLOSED - FINGER_OPEN),
                "gripper_commanded": closed,
                "world_vector": cmd.world_vector, "rotation_delta": cmd.rotation_delta,
                "gripper_action": cmd.gripper, "is_last": last,
            })
            if last:
                break
            # Apply the command: move the Cartesian target, solve IK, track it smoothly.
            target_pos, target_rot = new_target, new_rot
            closed = float(np.clip(closed + cmd.gripper, 0.0, 1.0))
            q_start = data.ctrl[arm_act].copy()
            q_goal, _ = ik.solve(q_start, target_pos, target_rot)
            for k in range(substeps):
                alpha = min(1.0, (k + 1) / (0.7 * substeps))
                data.ctrl[arm_act] = q_start + alpha * (q_goal - q_start)
                data.ctrl[finger_act] = FINGER_OPEN + closed * (FINGER_CLOSED - FINGER_OPEN)
                mujoco.mj_step(model, data)
            for i in min_dist:
                gap = float(np.linalg.norm(data.site_xpos[site] - data.body(f"object{i}").xpos))
                min_dist[i] = min(min_dist[i], gap)
    finally:
        renderer.close()

    first_task = next((s for s in segments if s.kind != "random"), None)
    if first_task is None:
        success = True
    elif first_task.kind == "reach":
        success = min_dist[first_task.target] < 0.06
    else:
        moved = np.linalg.norm(data.body(f"object{first_task.target}").xpos[:2] - obj_start[first_task.target][:2])
        success = bool(moved > 0.05)
    instruction = first_task.instruction if first_task else "move the arm around"
    return _to_rt1_example(steps, instruction, success, bounds, start_quat, table_z, params, first_task)


def _to_rt1_example(steps, instruction, success, bounds, start_quat, table_z, params, task) -> dict:
    """Lay the episode out exactly as `fractal20220817_data` stores one example."""
    zeros = np.zeros
    workspace = np.concatenate([bounds, zeros((1, 3))]).astype(np.float32)
    out_steps = []
    for s in steps:
        to_go = (s["goal"] - s["ee_pos"]) if s["goal"] is not None else zeros(3)
        rot_to_go = _rot_to_rpy(s["target_rot"] @ s["ee_rot"].T)
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
                "base_pose_tool_reached": np.concatenate([s["ee_pos"], _quat(s["ee_rot"])]).astype(np.float32),
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


