"""A randomized tabletop scene around MuJoCo Menagerie's Google Robot (RT-1's robot).

Every episode gets its own compiled model: object count, shapes, colours and positions,
table colour and texture, floor, lighting and a small camera jitter are drawn from the
episode's generator. Recompiling per episode costs ~15 ms (the robot's meshes are cached
by `MjSpec.copy`), far cheaper than rendering, and keeps every episode's model exact
instead of patching a shared one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import mujoco
import numpy as np

# Where RT-1's head camera sits on the robot (base frame, metres) and what it looks at.
# The head is rigid on this model, so the camera is a world-fixed camera.
HEAD_CAMERA_POS = np.array([0.24, 0.0, 1.32])
HEAD_CAMERA_LOOKAT = np.array([0.68, -0.12, 0.64])
HEAD_CAMERA_FOVY = 46.0

# The tabletop the arm works over (base frame). The arm's shoulder is at z ~ 0.77 m.
TABLE_X = (0.42, 1.10)
TABLE_Y = (-0.55, 0.45)
TABLE_HEIGHT = (0.60, 0.66)
# Where objects may be placed: the part of the table the camera sees and the arm reaches.
OBJECT_X = (0.55, 0.85)
OBJECT_Y = (-0.40, 0.15)

SERVO_GAIN = 10.0

SHAPES = ("box", "cylinder", "sphere", "capsule", "ellipsoid")
COLOURS = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.12, 0.30, 0.85),
    "yellow": (0.95, 0.85, 0.15),
    "orange": (0.95, 0.50, 0.10),
    "purple": (0.55, 0.20, 0.70),
    "white": (0.92, 0.92, 0.90),
    "black": (0.08, 0.08, 0.08),
}
SHAPE_WORDS = {
    "box": "block",
    "cylinder": "can",
    "sphere": "ball",
    "capsule": "bottle",
    "ellipsoid": "egg",
}


@dataclass(frozen=True)
class SceneObject:
    """One loose object on the table."""

    shape: str
    colour: str
    size: tuple[float, ...]  # MuJoCo geom size for the shape
    pos: tuple[float, float]  # (x, y) on the table
    yaw: float

    @property
    def name(self) -> str:
        return f"{self.colour} {SHAPE_WORDS[self.shape]}"

    @property
    def half_height(self) -> float:
        if self.shape in ("box", "cylinder", "ellipsoid"):
            return self.size[2] if self.shape != "cylinder" else self.size[1]
        if self.shape == "capsule":
            return self.size[0]  # lies on its side
        return self.size[0]


@dataclass(frozen=True)
class SceneParams:
    """Everything random about one episode's scene."""

    table_height: float
    table_rgb1: tuple[float, float, float]
    table_rgb2: tuple[float, float, float]
    table_texture: str  # flat, checker or gradient (MuJoCo builtins), or wood (stripes drawn here)
    floor_rgb: tuple[float, float, float]
    light_pos: tuple[float, float, float]
    light_diffuse: float
    ambient: float
    light_rgb: tuple[float, float, float] = (1.0, 1.0, 1.0)  # the key light's colour (white in "default")
    camera_jitter: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)  # dx, dy, dz (m), dyaw, dpitch (rad)
    objects: tuple[SceneObject, ...] = field(default_factory=tuple)


# Scene families: "default" is what sim-rt1 trained on; "workshop" is a table and lighting it never saw
# (dark wood-grain tables, a warm, dim key light from the other side), for fine-tuning experiments.
SCENES = ("default", "workshop")


def sample_scene(rng: np.random.Generator, min_objects: int = 1, max_objects: int = 5,
                 scene: str = "default") -> SceneParams:
    """Draw a scene: objects placed without overlap inside the reachable, visible area.

    Every family draws the default scene first, so objects and camera are the same for a seed
    and only the table and lighting differ."""
    if scene not in SCENES:
        raise ValueError(f"unknown sim scene '{scene}'; scenes: {list(SCENES)}")
    objects: list[SceneObject] = []
    colour_names = list(COLOURS)
    n = int(rng.integers(min_objects, max_objects + 1))
    for _ in range(200):
        if len(objects) == n:
            break
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        r = float(rng.uniform(0.022, 0.045))
        size = {
            "box": (r, float(rng.uniform(0.02, 0.045)), float(rng.uniform(0.02, 0.05))),
            "cylinder": (r, float(rng.uniform(0.025, 0.06))),
            "sphere": (r,),
            "capsule": (min(r, 0.03), float(rng.uniform(0.03, 0.06))),
            "ellipsoid": (r, float(rng.uniform(0.02, 0.04)), float(rng.uniform(0.02, 0.04))),
        }[shape]
        pos = (float(rng.uniform(*OBJECT_X)), float(rng.uniform(*OBJECT_Y)))
        if any(np.hypot(pos[0] - o.pos[0], pos[1] - o.pos[1]) < 0.12 for o in objects):
            continue
        colour = colour_names[int(rng.integers(len(colour_names)))]
        objects.append(SceneObject(shape, colour, size, pos, float(rng.uniform(-np.pi, np.pi))))
    base = rng.uniform(0.15, 0.85, size=3)
    params = SceneParams(
        table_height=float(rng.uniform(*TABLE_HEIGHT)),
        table_rgb1=tuple(base.tolist()),
        table_rgb2=tuple(np.clip(base + rng.uniform(-0.15, 0.15, 3), 0, 1).tolist()),
        table_texture=("flat", "checker", "gradient")[int(rng.integers(3))],
        floor_rgb=tuple(rng.uniform(0.1, 0.5, 3).tolist()),
        light_pos=(float(rng.uniform(-0.5, 1.5)), float(rng.uniform(-1.5, 1.5)), float(rng.uniform(1.8, 3.0))),
        light_diffuse=float(rng.uniform(0.45, 0.85)),
        ambient=float(rng.uniform(0.2, 0.4)),
        camera_jitter=tuple(
            np.concatenate([rng.uniform(-0.01, 0.01, 3), rng.uniform(-0.03, 0.03, 2)]).tolist()
        ),
        objects=tuple(objects),
    )
    if scene == "workshop":
        wood = np.array([0.30, 0.18, 0.09]) * rng.uniform(0.6, 1.2)
        params = replace(
            params,
            table_rgb1=tuple(np.clip(wood, 0, 1).tolist()),
            table_rgb2=tuple(np.clip(wood * rng.uniform(1.5, 2.0), 0, 1).tolist()),
            table_texture="wood",
            floor_rgb=tuple(rng.uniform(0.55, 0.75, 3).tolist()),
            light_pos=(float(rng.uniform(0.2, 1.2)), float(rng.uniform(1.5, 2.5)), float(rng.uniform(1.2, 1.8))),
            light_diffuse=float(rng.uniform(0.55, 0.75)),
            ambient=float(rng.uniform(0.08, 0.14)),
            light_rgb=(1.0, float(rng.uniform(0.68, 0.78)), float(rng.uniform(0.38, 0.5))),
        )
    return params


def menagerie_robot_xml() -> Path:
    """Path of the Google Robot's robot.xml, without ever downloading it.

    MENAGERIE_ROOT (an offline Menagerie copy) wins; otherwise the model must already be in
    mujoco-menagerie's cache, which `make setup` fills. Run time never touches the network.
    """
    import mujoco_menagerie

    cache = mujoco_menagerie.Cache()  # honours MENAGERIE_ROOT and MENAGERIE_CACHE_DIR
    robot = mujoco_menagerie.get("google_robot")
    if cache.root:
        path = cache.root / "google_robot" / "robot.xml"
        where = f"MENAGERIE_ROOT={cache.root}"
    elif cache.is_cached(robot):
        path = cache.model_path(robot) / "robot.xml"
        where = f"the mujoco-menagerie cache {cache.dir}"
    else:
        raise FileNotFoundError(
            f"the Google Robot model is not in the mujoco-menagerie cache ({cache.dir}) and MENAGERIE_ROOT "
            "is unset; run `make setup` (it prefetches the model) or `python -m mujoco_menagerie prefetch "
            "google_robot`, or set MENAGERIE_ROOT to an offline MuJoCo Menagerie copy")
    if not path.is_file():
        raise FileNotFoundError(f"Google Robot model not found at {path} (from {where})")
    return path


@lru_cache(maxsize=1)
def _robot_spec(path: str) -> mujoco.MjSpec:
    spec = mujoco.MjSpec.from_file(path)
    spec.compile()  # warms the mesh cache so each episode's copy compiles fast
    return spec


def camera_pose(jitter: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Head-camera position and quaternion (MuJoCo w,x,y,z) looking at the workspace."""
    pos = HEAD_CAMERA_POS + np.asarray(jitter[:3])
    forward = HEAD_CAMERA_LOOKAT - pos
    yaw = np.arctan2(forward[1], forward[0]) + jitter[3]
    pitch = np.arctan2(-forward[2], np.hypot(forward[0], forward[1])) + jitter[4]
    fwd = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), -np.sin(pitch)])
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    # MuJoCo cameras look along -z with +y up: columns are the camera axes in world frame.
    rot = np.stack([right, up, -fwd], axis=1)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, rot.flatten())
    return pos, quat


def build_model(params: SceneParams) -> mujoco.MjModel:
    """Compile the robot plus this episode's table, objects, lights and head camera."""
    spec = _robot_spec(str(menagerie_robot_xml())).copy()
    spec.option.timestep = 0.004
    spec.visual.headlight.ambient = [params.ambient] * 3
    spec.visual.headlight.diffuse = [0.25] * 3
    spec.visual.headlight.specular = [0.0] * 3
    spec.visual.quality.shadowsize = 1024
    spec.visual.map.znear = 0.01
    # Stiffer servos than the Menagerie defaults: the scripted controller commands 3 Hz
    # displacements and the video must show the arm actually making them.
    for act in spec.actuators:
        act.gainprm[0] *= SERVO_GAIN
        act.biasprm[1] *= SERVO_GAIN
        act.biasprm[2] = -2.0 * np.sqrt(act.gainprm[0])
        act.forcerange = [4 * f for f in act.forcerange]

    if params.table_texture == "wood":
        tex = spec.add_texture(name="table_tex", type=mujoco.mjtTexture.mjTEXTURE_2D, width=256, height=256,
                               nchannel=3)
        tex.data = _wood_grain(params.table_rgb1, params.table_rgb2).tobytes()
    else:
        spec.add_texture(
            name="table_tex",
            type=mujoco.mjtTexture.mjTEXTURE_2D,
            builtin={
                "flat": mujoco.mjtBuiltin.mjBUILTIN_FLAT,
                "checker": mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
                "gradient": mujoco.mjtBuiltin.mjBUILTIN_GRADIENT,
            }[params.table_texture],
            rgb1=list(params.table_rgb1),
            rgb2=list(params.table_rgb2),
            width=256,
            height=256,
        )
    table_mat = spec.add_material(name="table_mat", rgba=[1, 1, 1, 1])
    table_mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "table_tex"
    table_mat.texrepeat = [3, 3]

    world = spec.worldbody
    world.add_geom(
        name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3, 3, 0.05],
        rgba=[*params.floor_rgb, 1],
    )
    half = [(TABLE_X[1] - TABLE_X[0]) / 2, (TABLE_Y[1] - TABLE_Y[0]) / 2, 0.02]
    world.add_geom(
        name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=half, material="table_mat",
        pos=[(TABLE_X[0] + TABLE_X[1]) / 2, (TABLE_Y[0] + TABLE_Y[1]) / 2, params.table_height - 0.02],
        friction=[0.8, 0.01, 0.001],
    )
    world.add_light(
        name="key", pos=list(params.light_pos), dir=(-np.asarray(params.light_pos) + [0.7, 0, 0.6]).tolist(),
        diffuse=(params.light_diffuse * np.asarray(params.light_rgb)).tolist(), specular=[0.1] * 3,
        castshadow=True,
    )
    for i, obj in enumerate(params.objects):
        body = world.add_body(
            name=f"object{i}",
            pos=[obj.pos[0], obj.pos[1], params.table_height + obj.half_height + 0.002],
            quat=_object_quat(obj),
        )
        body.add_freejoint(name=f"object{i}_free")
        body.add_geom(
            name=f"object{i}_geom", type=getattr(mujoco.mjtGeom, f"mjGEOM_{obj.shape.upper()}"),
            size=list(obj.size) + [0.0] * (3 - len(obj.size)), rgba=[*COLOURS[obj.colour], 1],
            mass=0.08, friction=[0.6, 0.01, 0.001], condim=4,
        )
    pos, quat = camera_pose(params.camera_jitter)
    world.add_camera(name="head", pos=pos.tolist(), quat=quat.tolist(), fovy=HEAD_CAMERA_FOVY)
    return spec.compile()


def _wood_grain(dark: tuple[float, ...], light: tuple[float, ...], size: int = 256) -> np.ndarray:
    """A deterministic wood-grain texture: wavy stripes between two colours, uint8 [size, size, 3]."""
    y, x = np.mgrid[0:size, 0:size] / size
    wave = 0.35 * np.sin(2 * np.pi * 1.5 * x) + 0.1 * np.sin(2 * np.pi * 7 * x)
    grain = 0.5 + 0.5 * np.sin(2 * np.pi * (9 * y + wave))
    mix = grain[..., None] ** 3
    rgb = (1 - mix) * np.asarray(dark) + mix * np.asarray(light)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def _object_quat(obj: SceneObject) -> list[float]:
    yaw_quat = [np.cos(obj.yaw / 2), 0.0, 0.0, np.sin(obj.yaw / 2)]
    if obj.shape != "capsule":
        return yaw_quat
    # Capsules lie on their side: rotate 90 degrees about x, then yaw.
    lie = [np.cos(np.pi / 4), np.sin(np.pi / 4), 0.0, 0.0]
    out = np.zeros(4)
    mujoco.mju_mulQuat(out, np.asarray(yaw_quat), np.asarray(lie))
    return out.tolist()
