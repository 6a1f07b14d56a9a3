"""Damped-least-squares inverse kinematics for the Google Robot's 7-DoF arm.

The scripted controller speaks RT-1's language (end-effector displacements in the base
frame); the robot's actuators take joint targets. This module converts one into the
other on a scratch `MjData`, so the simulation's own state is never disturbed.
"""

from __future__ import annotations

import mujoco
import numpy as np

ARM_JOINTS = (
    "joint_torso", "joint_shoulder", "joint_bicep", "joint_elbow",
    "joint_forearm", "joint_wrist", "joint_gripper",
)
FINGER_JOINTS = ("joint_finger_right", "joint_finger_left")
EE_SITE = "gripper"
# Preferred posture: elbow low and out to the robot's right, so the arm enters the head
# camera's view from the lower right (as in RT-1) instead of sweeping across the lens.
ELBOW_LOW_POSTURE = np.array([-0.18, 1.8, -0.67, -1.13, 0.82, 1.79, 0.55])


class ArmIK:
    """Solves joint targets that put the gripper site at a pose, staying near the seed."""

    def __init__(
        self, model: mujoco.MjModel, damping: float = 0.05, rot_weight: float = 0.3,
        posture: np.ndarray = ELBOW_LOW_POSTURE, posture_gain: float = 0.1,
    ):
        self.model = model
        self.data = mujoco.MjData(model)
        self.qadr = np.array([model.joint(j).qposadr[0] for j in ARM_JOINTS])
        self.dadr = np.array([model.joint(j).dofadr[0] for j in ARM_JOINTS])
        self.lo = model.jnt_range[[model.joint(j).id for j in ARM_JOINTS], 0]
        self.hi = model.jnt_range[[model.joint(j).id for j in ARM_JOINTS], 1]
        self.site = model.site(EE_SITE).id
        self.damping = damping
        self.rot_weight = rot_weight
        self.posture = posture
        self.posture_gain = posture_gain
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def forward(self, q_arm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gripper site position and 3x3 rotation for arm joint values `q_arm`."""
        self.data.qpos[self.qadr] = q_arm
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def solve(
        self, seed: np.ndarray, pos: np.ndarray, rot: np.ndarray, iters: int = 60, tol: float = 1e-4
    ) -> tuple[np.ndarray, float]:
        """Joint values reaching (pos, rot) from `seed`; returns them and the position error (m)."""
        q = seed.copy()
        target_quat = np.zeros(4)
        mujoco.mju_mat2Quat(target_quat, rot.flatten())
        site_quat = np.zeros(4)
        err = np.zeros(6)
        for _ in range(iters):
            cur_pos, cur_rot = self.forward(q)
            err[:3] = pos - cur_pos
            mujoco.mju_mat2Quat(site_quat, cur_rot.flatten())
            mujoco.mju_subQuat(err[3:], target_quat, site_quat)
            # subQuat gives the rotation in the site's frame; the Jacobian is in world frame.
            err[3:] = self.rot_weight * (cur_rot @ err[3:])
            if np.linalg.norm(err[:3]) < tol and np.linalg.norm(err[3:]) < tol * 10:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site)
            jac = np.vstack([self._jacp[:, self.dadr], self.rot_weight * self._jacr[:, self.dadr]])
            pinv = jac.T @ np.linalg.inv(jac @ jac.T + self.damping**2 * np.eye(6))
            # The 7th DoF is redundant: spend it pulling toward the preferred posture.
            null = np.eye(len(q)) - pinv @ jac
            dq = pinv @ err + null @ (self.posture_gain * (self.posture - q))
            q = np.clip(q + np.clip(dq, -0.3, 0.3), self.lo, self.hi)
        cur_pos, _ = self.forward(q)
        return q, float(np.linalg.norm(pos - cur_pos))
