"""ROS 2 bags (MCAP or sqlite3 storage) to an RLDS episode dataset that `ClipDataset` reads.

`rosbags` reads the bags in pure Python: no ROS installation is needed. A camera topic of
`sensor_msgs/msg/Image` or `sensor_msgs/msg/CompressedImage` is resampled to the model's frame rate
by header stamp (`genie_robot.data.resample` states the rule), split into episodes at time gaps
and at each bag, and written with TFDS's builder (`genie_robot.data.rlds_writer`) all or nothing.

Two passes over each bag keep memory to one episode: the first reads only the stamps (the CDR
header, without deserializing the image), the second decodes just the frames that are kept.
Raw images are stored losslessly (PNG); compressed ones keep their JPEG/PNG bytes unchanged.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genie_robot.data.layout import DatasetError
from genie_robot.data.resample import ConvertConfig, ResampleStats, resample

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
# Raw encodings read as 8-bit RGB: channel order and count.
RAW_ENCODINGS = {"rgb8": ("rgb", 3), "bgr8": ("bgr", 3), "rgba8": ("rgb", 4), "bgra8": ("bgr", 4),
                 "mono8": ("mono", 1), "8UC3": ("bgr", 3), "8UC1": ("mono", 1)}
COMPRESSED_FORMATS = ("JPEG", "PNG")
# Action messages and the step fields they become (name -> float32 vector).
ACTION_TYPES = {
    "geometry_msgs/msg/Twist": "linear (3) and angular (3)",
    "geometry_msgs/msg/TwistStamped": "linear (3) and angular (3), stamped",
    "std_msgs/msg/Float32MultiArray": "action (D)",
    "std_msgs/msg/Float64MultiArray": "action (D)",
    "sensor_msgs/msg/JointState": "joint_position (N), stamped",
}


@dataclass
class BagConfig(ConvertConfig):
    """`genie-robot data-from-bag`: which recording, which topics, and how to cut it."""

    bag: list[str] = field(default_factory=list)  # bag directories (each holds metadata.yaml)
    image_topic: str | None = None
    action_topic: str | None = None

    def validate(self) -> None:
        if not self.bag:
            raise ValueError("bag=<bag directory> is required (a list for several bags: bag=[a,b])")
        if not self.image_topic:
            raise ValueError("image_topic=<topic> is required (a sensor_msgs Image or CompressedImage topic)")
        super().validate()


# --- reading one bag --------------------------------------------------------------------------
def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def _open(path: Path):
    from rosbags.rosbag2 import Reader

    if not path.exists():
        raise DatasetError(f"bag {path} does not exist")
    if not path.is_dir() or not (path / "metadata.yaml").is_file():
        raise DatasetError(f"{path} is not a ROS 2 bag directory (no metadata.yaml; expected what `ros2 bag record` "
                           "writes: a directory with metadata.yaml and .mcap or .db3 files)")
    reader = Reader(path)
    try:
        reader.open()
    except Exception as e:  # noqa: BLE001 - rosbags raises several types for damaged files
        raise DatasetError(f"bag {path} cannot be opened (truncated or corrupt?): {type(e).__name__}: {e}") from e
    return reader


def _connection(reader, path: Path, topic: str, allowed: tuple[str, ...] | dict, what: str):
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        images = sorted({c.topic for c in reader.connections if c.msgtype in IMAGE_TYPES})
        if what == "image":
            raise DatasetError(f"bag {path}: no topic '{topic}'; its image topics: {images or 'none'}")
        topics = sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections})
        raise DatasetError(f"bag {path}: no topic '{topic}'; its topics: {topics}")
    if conns[0].msgtype not in allowed:
        raise DatasetError(f"bag {path}: topic '{topic}' carries {conns[0].msgtype}; an {what} topic must be one of "
                           f"{list(allowed)}")
    return conns


def _cdr_stamp(raw: bytes | memoryview) -> float:
    """A message's header stamp in seconds, read from its CDR bytes (the header comes first)."""
    little = raw[1] == 1  # encapsulation: 0x0001 CDR little-endian, 0x0000 big-endian
    sec, nsec = struct.unpack_from("<iI" if little else ">iI", raw, 4)
    return sec + nsec * 1e-9


def _messages(reader, conns, path: Path, topic: str) -> Iterator[tuple[int, int, bytes]]:
    """(index, receive time ns, raw CDR) of a topic's messages, damaged storage named by bag and index."""
    index = -1
    try:
        for _, received, raw in reader.messages(connections=conns):
            index += 1
            yield index, received, raw
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001 - storage back ends raise sqlite3, mcap and struct errors
        raise DatasetError(f"bag {path} is truncated or corrupt: reading '{topic}' failed after message index "
                           f"{index}: {type(e).__name__}: {e}") from e


def _stamps(reader, conns, path: Path, topic: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Frame stamps (header, or receive time where the header is unset) of kept messages and their indices."""
    stamps, keep, dupes, last = [], [], 0, None
    for index, received, raw in _messages(reader, conns, path, topic):
        try:
            t = _cdr_stamp(raw)
        except struct.error as e:
            raise DatasetError(f"bag {path}: '{topic}' message index {index} is too short to hold a header "
                               f"({len(raw)} bytes)") from e
        if t == 0.0:
            t = received * 1e-9
        if last is not None and t < last:
            raise DatasetError(
                f"bag {path}: stamps on '{topic}' go backwards at message index {index} ({t:.6f} s after "
                f"{last:.6f} s); the converter needs each camera frame stamped later than the one before")
        if last is not None and t == last:
            dupes += 1
            continue
        stamps.append(t)
        keep.append(index)
        last = t
    return np.asarray(stamps, np.float64), np.asarray(keep, np.int64), dupes


def decode_image(msg, msgtype: str, where: str) -> tuple[np.ndarray | bytes, tuple[int, int], str]:
    """One camera message as what the dataset stores: (RGB array or compressed bytes, (H, W), encoding)."""
    if msgtype.endswith("CompressedImage"):
        from PIL import Image, UnidentifiedImageError

        data = bytes(msg.data)
        try:
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format
                im.load()  # decode fully: a truncated JPEG fails here, not inside training
                size = im.size
        except (UnidentifiedImageError, OSError) as e:
            raise DatasetError(f"{where}: CompressedImage format '{msg.format}' does not decode as an image ({e}); "
                               f"supported: {list(COMPRESSED_FORMATS)}") from e
        if fmt not in COMPRESSED_FORMATS:
            raise DatasetError(f"{where}: unsupported compressed encoding {fmt} (format '{msg.format}'); "
                               f"supported: {list(COMPRESSED_FORMATS)}")
        return data, (size[1], size[0]), fmt.lower()
    enc = msg.encoding
    if enc not in RAW_ENCODINGS:
        raise DatasetError(f"{where}: unsupported image encoding '{enc}'; supported: {sorted(RAW_ENCODINGS)}")
    order, channels = RAW_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, np.uint8)
    if step < w * channels or len(data) < h * step:
        raise DatasetError(f"{where}: image data is {len(data)} bytes with step {step}; {enc} {w}x{h} needs step >= "
                           f"{w * channels} and {h} rows")
    img = data[: h * step].reshape(h, step)[:, : w * channels].reshape(h, w, channels)
    if order == "mono":
        img = np.repeat(img, 3, axis=2)
    else:
        img = img[..., :3]
        if order == "bgr":
            img = img[..., ::-1]
    return np.ascontiguousarray(img), (h, w), "png"


def _action_value(msg, msgtype: str) -> tuple[dict[str, np.ndarray], float | None]:
    """A command message as named float vectors, and its header stamp if it has one."""
    def vec(v) -> np.ndarray:
        return np.array([v.x, v.y, v.z], np.float32)

    if msgtype.endswith("TwistStamped"):
        value, stamp = {"linear": vec(msg.twist.linear), "angular": vec(msg.twist.angular)}, msg.header.stamp
    elif msgtype.endswith("Twist"):
        value, stamp = {"linear": vec(msg.linear), "angular": vec(msg.angular)}, None
    elif msgtype.endswith("MultiArray"):
        value, stamp = {"action": np.asarray(msg.data, np.float32)}, None
    else:  # JointState
        value, stamp = {"joint_position": np.asarray(msg.position, np.float32)}, msg.header.stamp
    t = stamp.sec + stamp.nanosec * 1e-9 if stamp is not None else None
    return value, (t if t else None)


def _actions(reader, path: Path, topic: str, typestore) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    conns = _connection(reader, path, topic, ACTION_TYPES, "action")
    msgtype = conns[0].msgtype
    stamps, values, last = [], {}, None
    for index, received, raw in _messages(reader, conns, path, topic):
        value, t = _action_value(typestore.deserialize_cdr(raw, msgtype), msgtype)
        t = t if t is not None else received * 1e-9
        if last is not None and t < last:
            raise DatasetError(f"bag {path}: stamps on '{topic}' go backwards at message index {index} "
                               f"({t:.6f} s after {last:.6f} s)")
        for k, v in value.items():
            if values.setdefault(k, []) and len(v) != len(values[k][0]):
                raise DatasetError(f"bag {path}: '{topic}' message index {index} has {len(v)} values in '{k}', "
                                   f"the first had {len(values[k][0])}")
            values[k].append(v)
        stamps.append(t)
        last = t
    if not stamps:
        raise DatasetError(f"bag {path}: the action topic '{topic}' has no messages")
    return np.asarray(stamps), {k: np.stack(v) for k, v in values.items()}


def _step_actions(frame_t: np.ndarray, act_t: np.ndarray, act_v: dict[str, np.ndarray], period: float
                  ) -> tuple[dict, int]:
    """RLDS: step t's action is the command in force until the next frame: the latest message stamped before
    frame t+1 (the last step's, before one period after its frame). A command chosen on frame t is stamped after
    it, so this is that command. Steps before the first command get zeros and are counted."""
    until = np.append(frame_t[1:], frame_t[-1] + period)
    idx = np.searchsorted(act_t, until, side="left") - 1
    missing = int((idx < 0).sum())
    out = {}
    for k, v in act_v.items():
        rows = v[np.maximum(idx, 0)].copy()
        rows[idx < 0] = 0.0
        out[k] = rows
    return out, missing


# --- the dataset --------------------------------------------------------------------------------
def bag_features(shape: tuple[int, int, int], encoding: str, actions: dict[str, int]):
    """The RLDS feature spec of a converted recording (steps: image, timestamp, optional actions)."""
    import tensorflow_datasets as tfds

    step = {
        "observation": tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=shape, dtype=np.uint8, encoding_format=encoding),
            "timestamp": tfds.features.Scalar(dtype=np.float64, doc="the frame's stamp, seconds"),
        }),
        "is_first": tfds.features.Scalar(dtype=np.bool_),
        "is_last": tfds.features.Scalar(dtype=np.bool_),
        "is_terminal": tfds.features.Scalar(dtype=np.bool_),
    }
    if actions:
        step["action"] = tfds.features.FeaturesDict({
            k: tfds.features.Tensor(shape=(d,), dtype=np.float32) for k, d in sorted(actions.items())})
    return tfds.features.FeaturesDict({
        "steps": tfds.features.Dataset(step),
        "episode_metadata": tfds.features.FeaturesDict({
            "file_path": tfds.features.Text(),
            "source": tfds.features.Text(),
        }),
    })


def episode_example(frames: list, stamps: np.ndarray, actions: dict[str, np.ndarray] | None, file_path: str,
                    source: str) -> dict:
    n = len(frames)
    steps = []
    for t in range(n):
        step = {"observation": {"image": frames[t], "timestamp": float(stamps[t])},
                "is_first": t == 0, "is_last": t == n - 1, "is_terminal": False}
        if actions:
            step["action"] = {k: v[t] for k, v in actions.items()}
        steps.append(step)
    return {"steps": steps, "episode_metadata": {"file_path": file_path, "source": source}}


@dataclass
class _BagPlan:
    path: Path
    episodes: list[np.ndarray]  # message indices of each kept episode's frames
    stamps: list[np.ndarray]
    actions: tuple[np.ndarray, dict[str, np.ndarray]] | None
    stats: ResampleStats


def _plan(path: Path, cfg: BagConfig, typestore) -> _BagPlan:
    reader = _open(path)
    try:
        conns = _connection(reader, path, cfg.image_topic, IMAGE_TYPES, "image")
        stamps, indices, dupes = _stamps(reader, conns, path, cfg.image_topic)
        if len(stamps) == 0:
            raise DatasetError(f"bag {path}: the image topic '{cfg.image_topic}' has no messages")
        runs, stats = resample(stamps, cfg.fps, cfg.tolerance, cfg.min_frames)
        stats.frames_read += dupes
        stats.duplicate_stamps = dupes
        actions = _actions(reader, path, cfg.action_topic, typestore) if cfg.action_topic else None
    finally:
        reader.close()
    return _BagPlan(path, [indices[r] for r in runs], [stamps[r] for r in runs], actions, stats)


def _frames(plan: _BagPlan, cfg: BagConfig, typestore, shape: list) -> Iterator[dict]:
    """Second pass: decode the kept frames in order, one episode at a time."""
    reader = _open(plan.path)
    try:
        conns = _connection(reader, plan.path, cfg.image_topic, IMAGE_TYPES, "image")
        msgtype = conns[0].msgtype
        wanted = {int(i) for ep in plan.episodes for i in ep}
        episode, current = [], 0
        for index, _, raw in _messages(reader, conns, plan.path, cfg.image_topic):
            if index not in wanted:
                continue
            where = f"bag {plan.path}, topic '{cfg.image_topic}', message index {index}"
            image, hw, encoding = decode_image(typestore.deserialize_cdr(raw, msgtype), msgtype, where)
            if not shape:
                shape += [hw, encoding]
            elif (hw, encoding) != tuple(shape):
                raise DatasetError(f"{where}: a {hw[0]}x{hw[1]} {encoding} image where the first kept frame was "
                                   f"{shape[0][0]}x{shape[0][1]} {shape[1]}; one camera stream must keep one size "
                                   "and encoding")
            episode.append(image)
            if len(episode) == len(plan.episodes[current]):
                stamps = plan.stamps[current]
                acts = None
                if plan.actions is not None:
                    acts, missing = _step_actions(stamps, *plan.actions, 1.0 / cfg.fps)
                    if missing:
                        plan.stats.notes.append(f"{plan.path} episode {current}: {missing} steps before the first "
                                                f"'{cfg.action_topic}' message got zero actions")
                yield episode_example(episode, stamps, acts, str(plan.path), f"rosbag2:{cfg.image_topic}")
                episode, current = [], current + 1
    finally:
        reader.close()


def _first_frame(plan: _BagPlan, cfg: BagConfig, typestore) -> tuple[tuple[int, int], str]:
    reader = _open(plan.path)
    try:
        conns = _connection(reader, plan.path, cfg.image_topic, IMAGE_TYPES, "image")
        first = int(plan.episodes[0][0])
        for index, _, raw in _messages(reader, conns, plan.path, cfg.image_topic):
            if index == first:
                where = f"bag {plan.path}, topic '{cfg.image_topic}', message index {index}"
                _, hw, encoding = decode_image(typestore.deserialize_cdr(raw, conns[0].msgtype), conns[0].msgtype,
                                               where)
                return hw, encoding
    finally:
        reader.close()
    raise DatasetError(f"bag {plan.path}: message index {first} of '{cfg.image_topic}' vanished between two reads")


def convert_bags(cfg: BagConfig, progress: bool = True) -> tuple[Path, dict]:
    """Convert the bags; returns the dataset's version directory and a summary of what was kept and dropped."""
    cfg.validate()
    typestore = _typestore()
    paths = [Path(b).expanduser().resolve() for b in cfg.bag]
    plans = [_plan(p, cfg, typestore) for p in paths]
    stats = ResampleStats()
    for plan in plans:
        stats.add(plan.stats)
    if stats.episodes == 0:
        raise DatasetError(
            f"bag {', '.join(map(str, paths))}: topic '{cfg.image_topic}' holds no run of at least min_frames="
            f"{cfg.min_frames} frames at {cfg.fps} fps (the longest is {stats.longest_run}); a bag must be at least "
            "one clip long")
    # The first kept frame decides the image spec: the builder needs the features before any episode.
    (h, w), encoding = _first_frame(next(p for p in plans if p.episodes), cfg, typestore)
    action_dims = {k: v.shape[1] for k, v in plans[0].actions[1].items()} if cfg.action_topic else {}
    shape: list = [(h, w), encoding]

    def examples() -> Iterator[dict]:
        for plan in plans:
            if plan.actions is not None and {k: v.shape[1] for k, v in plan.actions[1].items()} != action_dims:
                raise DatasetError(f"bag {plan.path}: '{cfg.action_topic}' has other fields or sizes than in "
                                   f"{plans[0].path}")
            yield from _frames(plan, cfg, typestore, shape)

    from genie_robot.data.rlds_writer import write_rlds

    summary = {"bags": [str(p) for p in paths], "image_topic": cfg.image_topic, "action_topic": cfg.action_topic,
               "fps": cfg.fps, "image_shape": [h, w, 3], "image_encoding": encoding,
               "action_keys": sorted(action_dims), **stats.summary()}
    out = write_rlds(
        cfg.out, cfg.name, cfg.version, lambda: bag_features((h, w, 3), encoding, action_dims), examples(),
        description=f"genie-robot data-from-bag: '{cfg.image_topic}' of {len(paths)} ROS 2 bag(s) at {cfg.fps} fps",
        num_shards=min(cfg.num_shards, stats.episodes), total=stats.episodes, progress=progress,
        progress_desc="converting episodes", overwrite=cfg.overwrite,
        extra_files=lambda: {"genie_robot_conversion.json": json.dumps({**summary, "notes": stats.notes}, indent=2)})
    summary["notes"] = stats.notes
    return out, summary
