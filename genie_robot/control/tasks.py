"""The simulated robot as a control loop's `Robot` (in a process of its own: genie_robot.sim.service.SimProcess)."""

from __future__ import annotations

import numpy as np

from genie_robot.control.loop import Observation
from genie_robot.sim.service import RobotAction, SimProcess, SimRobotService


class SimRobotPort:
    """The simulated robot in-process, as a control loop's `Robot`."""

    def __init__(self, service: SimRobotService | SimProcess):
        self.service = service

    def reset(self, seed: int, episode: int, scene: str = "default") -> Observation:
        state = self.service.reset(seed, episode, scene)
        return Observation(state.image, state.ee_pos)

    def act(self, action: np.ndarray) -> Observation:
        r = self.service.step(RobotAction.from_vector(action))
        return Observation(r.state.image, r.state.ee_pos, r.clipped)

    def stop(self) -> None:
        if not self.service.terminated:
            self.service.step(RobotAction(np.zeros(3, np.float32), np.zeros(3, np.float32), 0.0, True))
