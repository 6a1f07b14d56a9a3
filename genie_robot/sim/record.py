"""Record simulated episodes into a ROS 2 bag, as a robot's camera and command topics would be.

A bag to try `genie-robot data-from-bag` on, and the round-trip test's source: the Google Robot's
head camera as `sensor_msgs/msg/Image` (rgb8, the rendered frames exactly) and/or
`sensor_msgs/msg/CompressedImage` (JPEG), and the commanded end-effector motion as
`geometry_msgs/msg/TwistStamped` (linear: RT-1's world_vector, angular: rotation_delta, per 3 Hz
step). Episodes follow each other with `gap_s` seconds of silence, the way separate takes sit in
one recording; `jitter_s` adds uniform noise to each frame's stamp, as a real camera driver has.
Written with `rosbags` (pure Python) in MCAP or sqlite3 storage, into a temporary directory that
is renamed into place when complete.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from genie_robot.sim.episode import CONTROL_HZ, encode_jpeg
from genie_robot.sim.writer import SimConfig, simulate_episodes

IMAGE_TOPIC = "/head_camera/image_raw"
COMPRESSED_TOPIC = "/head_camera/image_raw/compressed"
ACTION_TOPIC = "/arm/command"
START_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z: stamps look like a real recording's
RECEIVE_LATENCY_NS = 3_000_000  # the bag's receive time trails the header stamp


@dataclass
class RecordConfig:
    bag: str | None = None  # the bag directory to create
    storage: str = "mcap"  # mcap | sqlite3
    images: list[str] = field(default_factory=lambda: ["raw", "compressed"])  # topics to record
    jpeg_quality: int = 90
    gap_s: float = 5.0
    jitter_s: float = 0.0
    overwrite: bool = False

    def validate(self) -> None:
        if not self.bag:
            raise ValueError("bag=<directory> is required: where to write the bag")
        if self.storage not in ("mcap", "sqlite3"):
            raise ValueError(f"record.storage must be mcap or sqlite3, got '{self.storage}'")
        if not self.images or set(self.images) - {"raw", "compressed"}:
            raise ValueError(f"record.images must list raw and/or compressed, got {self.images}")
        period = 1.0 / CONTROL_HZ
        if not 0 <= self.jitter_s < period / 4:
            raise ValueError(f"record.jitter_s must be in [0, {period / 4:.3f}) s, got {self.jitter_s}")
        if self.gap_s < 2 * period:
            raise ValueError(f"record.gap_s must be >= {2 * period:.2f} s so episodes stay apart, got {self.gap_s}")


def record_sim_bag(sim: SimConfig, rec: RecordConfig, progress: bool = True) -> tuple[Path, dict]:
    """Simulate `sim.episodes` episodes into the bag `rec.bag`; returns its path and what it holds."""
    import os

    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    from tqdm import tqdm

    replace(sim, num_shards=1).validate()  # shards are the TFDS writer's; a bag has none
    rec.validate()
    os.environ.setdefault("MUJOCO_GL", "egl")
    final = Path(rec.bag).expanduser().resolve()
    if final.exists() and not rec.overwrite:
        raise FileExistsError(f"{final} already exists; pass record.overwrite=true to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    ts = get_typestore(Stores.ROS2_KILTED)
    Image, CompressedImage = ts.types["sensor_msgs/msg/Image"], ts.types["sensor_msgs/msg/CompressedImage"]
    Header, Time = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    TwistStamped, Twist = ts.types["geometry_msgs/msg/TwistStamped"], ts.types["geometry_msgs/msg/Twist"]
    Vector3 = ts.types["geometry_msgs/msg/Vector3"]
    rng = np.random.default_rng([sim.seed, 7])
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-partial-", dir=final.parent))
    bag_dir = staging / final.name
    frames = 0
    plugin = StoragePlugin.MCAP if rec.storage == "mcap" else StoragePlugin.SQLITE3
    try:
        with Writer(bag_dir, version=9, storage_plugin=plugin) as writer:
            conns = {}
            if "raw" in rec.images:
                conns["raw"] = writer.add_connection(IMAGE_TOPIC, Image.__msgtype__, typestore=ts)
            if "compressed" in rec.images:
                conns["compressed"] = writer.add_connection(COMPRESSED_TOPIC, CompressedImage.__msgtype__,
                                                            typestore=ts)
            conns["action"] = writer.add_connection(ACTION_TOPIC, TwistStamped.__msgtype__, typestore=ts)

            def write(key: str, msg, stamp_ns: int) -> None:
                writer.write(conns[key], stamp_ns + RECEIVE_LATENCY_NS, ts.serialize_cdr(msg, msg.__msgtype__))

            t_ns = START_NS
            period_ns = int(round(1e9 / CONTROL_HZ))
            episodes = simulate_episodes(sim.seed, list(range(sim.episodes)), sim.min_steps, sim.max_steps, None,
                                         sim.workers, sim.scene)
            for _, ep in tqdm(episodes, total=sim.episodes, desc="recording episodes", unit="ep",
                              disable=not progress):
                for t, step in enumerate(ep["steps"]):
                    stamp = t_ns + t * period_ns + int(rng.uniform(-rec.jitter_s, rec.jitter_s) * 1e9)
                    header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="head_camera")
                    image = step["observation"]["image"]
                    if "raw" in conns:
                        h, w, _ = image.shape
                        write("raw", Image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0,
                                           step=w * 3, data=image.reshape(-1)), stamp)
                    if "compressed" in conns:
                        jpeg = np.frombuffer(encode_jpeg(image, rec.jpeg_quality), np.uint8)
                        write("compressed", CompressedImage(header=header, format="rgb8; jpeg compressed rgb8",
                                                            data=jpeg), stamp)
                    wv, rd = step["action"]["world_vector"], step["action"]["rotation_delta"]
                    # The command is chosen on this frame, so it is stamped (and received) just after it.
                    cs = stamp + 1_000_000
                    cmd = TwistStamped(header=Header(stamp=Time(sec=cs // 10**9, nanosec=cs % 10**9),
                                                     frame_id="base_link"), twist=Twist(
                        linear=Vector3(x=float(wv[0]), y=float(wv[1]), z=float(wv[2])),
                        angular=Vector3(x=float(rd[0]), y=float(rd[1]), z=float(rd[2]))))
                    write("action", cmd, cs)
                    frames += 1
                t_ns += len(ep["steps"]) * period_ns + int(rec.gap_s * 1e9)
        if final.exists():
            shutil.rmtree(final)
        bag_dir.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    topics = [IMAGE_TOPIC] * ("raw" in rec.images) + [COMPRESSED_TOPIC] * ("compressed" in rec.images)
    return final, {"bag": str(final), "storage": rec.storage, "episodes": sim.episodes, "frames": frames,
                   "image_topics": topics, "action_topic": ACTION_TOPIC, "fps": CONTROL_HZ}
