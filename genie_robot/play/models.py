"""The models a play server offers: each an ONNX export, loaded into the onnxruntime engine on first use.

`play` runs on the engine a robot runs (`genie_robot.runtime.OnnxWorldModel`), so what a person sees on the page
is what the ROS node would imagine. A model can be named three ways: an export directory (`manifest.json`) is used
as it is; a shipped reference ("sim-rt1") or a training run directory is exported once into the play cache
(`play.cache_dir/<name>`, about 30 s for sim-rt1 on 2 cores) and re-exported only when its weights change (a
fingerprint of the source is kept beside the export).

A model that does not load is a message for the page and the log (`PlayError`), not a dead server: other
sessions keep playing their models, and the next request tries again (a fixed directory is picked up).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path

from genie_robot import reference
from genie_robot.play.session import EngineGate, PlayError, PlayModel
from genie_robot.runtime.engine import OnnxWorldModel
from genie_robot.runtime.manifest import FORMAT_VERSION, MANIFEST

log = logging.getLogger(__name__)
FINGERPRINT = "play_source.json"


def model_name(source: str) -> str:
    """The name a model shows on the page: a reference's name, else its directory's."""
    return str(source) if reference.is_reference_name(source) else Path(source).resolve().name


def fingerprint(source: str) -> str:
    """Changes when the weights behind `source` change: a reference's card (sha256 of every file), or each
    file's path, size and modification time in a run directory."""
    if reference.is_reference_name(source):
        info = reference.card(source)
        return hashlib.sha256(json.dumps(info.get("files", {}), sort_keys=True).encode()).hexdigest()
    root = Path(source)
    if not root.is_dir():
        raise PlayError(f"{root} does not exist (expected an export directory, a training run "
                        f"directory or a reference name: {', '.join(reference.available()) or 'none shipped'})")
    entries = sorted((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                     for p in root.rglob("*") if p.is_file())
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def export_dir(source: str, cache_dir: Path) -> Path:
    """An export of `source` for onnxruntime: `source` itself when it is one, else the play cache's, made now
    when missing or stale."""
    if not reference.is_reference_name(source) and (Path(source) / MANIFEST).is_file():
        return Path(source)
    out = cache_dir / model_name(source)
    stamp = f"{fingerprint(source)}/format {FORMAT_VERSION}"  # an export format change re-exports too
    if (out / MANIFEST).is_file() and (out / FINGERPRINT).is_file() and \
            json.loads((out / FINGERPRINT).read_text()).get("fingerprint") == stamp:
        return out
    from genie_robot_export.exporter import export

    log.info("exporting %s for onnxruntime into %s (once; reused while its weights stay the same)", source, out)
    try:
        export(source, out, progress=lambda msg: log.info("%s", msg))
    except (OSError, ValueError, RuntimeError) as e:
        raise PlayError(f"{source} cannot be exported for onnxruntime: {e}") from e
    (out / FINGERPRINT).write_text(json.dumps({"source": str(source), "fingerprint": stamp}))
    return out


class ModelRegistry:
    """Name -> source of the offered models; each exported and loaded on first use, then kept."""

    def __init__(self, sources: list[str], cache_dir: str | Path, providers: list[str] | None = None,
                 threads: int = 0):
        if not sources:
            raise PlayError("play needs at least one model (ckpt=<export dir, run dir or reference name>)")
        self.sources = {model_name(s): str(s) for s in sources}
        if len(self.sources) != len(sources):
            raise PlayError(f"two models share a name: {sources}; give them directories with different names")
        self.cache_dir = Path(cache_dir)
        self.providers, self.threads = providers, threads
        self._loaded: dict[str, PlayModel] = {}
        self._locks = {name: threading.Lock() for name in self.sources}

    @property
    def names(self) -> list[str]:
        return list(self.sources)

    @property
    def default(self) -> str:
        return self.names[0]

    def get(self, name: str) -> PlayModel:
        if name not in self.sources:
            raise PlayError(f"unknown model {name!r}; this server offers {', '.join(self.names)}")
        with self._locks[name]:  # one load per model, however many tabs ask at once
            if name not in self._loaded:
                self._loaded[name] = self._load(name)
            return self._loaded[name]

    def _load(self, name: str) -> PlayModel:
        source = self.sources[name]
        try:
            directory = export_dir(source, self.cache_dir)
            kwargs = {"threads": self.threads}
            if self.providers:
                kwargs["providers"] = self.providers
            engine = OnnxWorldModel(directory, **kwargs)
        except (OSError, ValueError, RuntimeError) as e:  # ManifestError, EngineError, ReferenceError, PlayError
            log.error("model %s does not load: %s", name, e)
            raise PlayError(f"model {name} does not load: {e}") from e
        log.info("model %s loaded from %s (%s)", name, directory, engine.active)
        return PlayModel(name, engine, EngineGate())
