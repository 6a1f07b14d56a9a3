"""scripts/device_payload.py: a payload cut into parts that each fit one device call, joined and checked there."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "device_payload.py"
spec = importlib.util.spec_from_file_location("device_payload", SCRIPT)
payload = importlib.util.module_from_spec(spec)
spec.loader.exec_module(payload)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A package-like tree: incompressible bytes (as CUDA kernels nearly are), text, a nested folder."""
    src = tmp_path / "site"
    (src / "onnxruntime" / "capi").mkdir(parents=True)
    (src / "onnxruntime" / "capi" / "libproviders.so").write_bytes(os.urandom(3 * payload.MIB + 123))
    (src / "onnxruntime" / "__init__.py").write_text("version = '1.30.0'\n" * 1000)
    (src / "onnxruntime-1.30.0.dist-info").mkdir()
    (src / "onnxruntime-1.30.0.dist-info" / "METADATA").write_text("Name: onnxruntime-gpu\n")
    return src


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_parts_fit_their_size_and_join_into_the_same_files(source: Path, tmp_path: Path):
    dest = tmp_path / ".ortgpu"
    manifest = payload.split(source, dest, payload.MIB, "onnxruntime_gpu.whl", preset=1)
    assert len(manifest["parts"]) == 4  # 3 MiB of random bytes do not compress
    assert sorted(p.name for p in dest.iterdir()) == ["00", "01", "02", "03"]
    assert all((dest / p["folder"] / "part").stat().st_size <= payload.MIB for p in manifest["parts"])
    assert all((dest / p["folder"] / "manifest.json").is_file() for p in manifest["parts"])
    into = tmp_path / "there"
    payload.join(dest, into)
    assert _files(into) == _files(source)


def test_a_missing_or_damaged_part_is_named_and_nothing_is_unpacked(source: Path, tmp_path: Path):
    dest = tmp_path / ".ortgpu"
    payload.split(source, dest, payload.MIB, "onnxruntime_gpu.whl", preset=1)
    (dest / "02" / "part").unlink()
    damaged = bytearray((dest / "01" / "part").read_bytes())
    damaged[10] ^= 0xFF
    (dest / "01" / "part").write_bytes(bytes(damaged))
    into = tmp_path / "there"
    with pytest.raises(SystemExit) as e:
        payload.join(dest, into)
    message = str(e.value)
    assert "2 of 4 parts unusable" in message and "02/part is missing" in message and "01/part: sha256" in message
    assert not into.exists()


def test_a_part_leaves_room_for_the_working_tree_in_a_call():
    extra = 2 * payload.MIB
    size = payload.part_size(extra)
    assert size % payload.MIB == 0
    assert payload.travelling_bytes() + extra + size <= payload.CALL_LIMIT_MIB * payload.MIB


def test_a_folder_that_is_not_a_payload_is_not_replaced(source: Path, tmp_path: Path):
    dest = tmp_path / "work"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="refusing to replace"):
        payload.split(source, dest, payload.MIB, "onnxruntime_gpu.whl", preset=1)
    assert (dest / "notes.txt").read_text() == "mine"
    payload.split(source, tmp_path / ".ortgpu", payload.MIB, "a", preset=1)
    payload.split(source, tmp_path / ".ortgpu", 2 * payload.MIB, "b", preset=1)  # an earlier payload is replaced
    assert sorted(p.name for p in (tmp_path / ".ortgpu").iterdir()) == ["00", "01"]
