"""The export manifest: what an exported model directory holds, and the checks made on loading it.

`manifest.json` sits beside the ONNX graphs (written by `genie-robot export`, code in
export/). It carries everything the runtime needs without torch: the model config, the
resolution and window, vocabulary and action counts, MaskGIT defaults, each graph's input
and output names, dtypes and shapes, the sha256 of every file, the exporter's versions, and
the latent-to-robot adapter. Loading refuses, with the reason, a directory whose manifest is
missing, of another format version, or whose files are missing or differ from their sha256.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from genie_robot.core.engine import EngineError

FORMAT = "genie-robot-onnx"
# 2: the dynamics cache has one slot per window frame (cache.window) instead of growing by a frame per append.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
CODEBOOK = "codebook.npy"
# Graph name -> whether every export has it (the LAM is optional, as in a run directory).
GRAPHS = {"tokenizer_encoder": True, "tokenizer_decoder": True, "lam_encoder": False, "dynamics_step": True,
          "dynamics_append": True}
# numpy dtype names of the ONNX tensor types the graphs use.
ONNX_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64"}


class ManifestError(EngineError):
    """An export directory that cannot be loaded: what is wrong, and with which file or field."""


def sha256(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(directory: str | Path, check_files: bool = True) -> dict:
    """The checked manifest of an export directory (every listed file present and, if asked, hashed)."""
    root = Path(directory)
    path = root / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{root} is not a genie-robot ONNX export: {MANIFEST} is missing "
                            f"(make one with `genie-robot export ckpt=<run dir> out={root}`)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ManifestError(f"{path} is not readable JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ManifestError(f"{path} is not a genie-robot ONNX manifest (format field: "
                            f"{doc.get('format') if isinstance(doc, dict) else None!r}, expected '{FORMAT}')")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{path} has format_version {doc.get('format_version')!r}; this runtime reads version "
                            f"{FORMAT_VERSION}: re-export the model with this genie-robot version")
    for key in ("model", "graphs", "files", "precision", "cache"):
        if key not in doc:
            raise ManifestError(f"{path} lacks the field '{key}'")
    if not isinstance(doc["cache"], dict) or not isinstance(doc["cache"].get("window"), int):
        raise ManifestError(f"{path}: cache.window (the cache's slots, an integer) is missing")
    files = doc["files"]
    for name, required in GRAPHS.items():
        graph = doc["graphs"].get(name)
        if graph is None:
            if required:
                raise ManifestError(f"{path} lists no '{name}' graph")
            continue
        for f in graph.get("files", []):
            if f not in files:
                raise ManifestError(f"{path}: graph '{name}' uses {f}, which is not in the manifest's files")
    for name, digest in files.items():
        file = root / name
        if not file.is_file():
            raise ManifestError(f"{file} is missing (listed in {path})")
        if check_files and sha256(file) != digest:
            raise ManifestError(f"{file} does not match its sha256 in {path} (changed or corrupted after export)")
    return doc
