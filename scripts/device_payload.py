"""What a lent GPU machine lacks, packed to travel with device calls (docs/BENCHMARKS.md, "The GPU path").

The lent machine has torch, CUDA 13 and onnxruntime's CPU build, no package registry, and a call carries the
working tree plus at most 64 MiB in all. Two things must travel:
- `.whl/`: the pure-Python packages the training and benchmark scripts import that the image lacks
  (hydra-core, omegaconf, antlr4 at this repository's pins); small, carried by every call that needs them.
- `.ortgpu/NN/`: onnxruntime-gpu, the build with the CUDA and TensorRT execution providers (a 235 MiB wheel,
  337 MiB unpacked), xz-packed and cut into parts that each fit one call beside the working tree. Each part sits
  in its own folder with the manifest (every part's sha256), so call k carries `.ortgpu/k` alone; a warm machine
  keeps the ignored folders earlier calls brought, and the last call joins them.

Here, with a registry (once):
    python scripts/device_payload.py prepare            # .whl/ and .ortgpu/00 .. .ortgpu/NN
There, after the calls that carried every part (scripts/gpu_lease.sh does this itself):
    python3 scripts/device_payload.py join .ortgpu --into /tmp/site

`join` refuses a missing part or one whose sha256 differs (a machine given back between calls starts bare),
naming it, and unpacks nothing then.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
CALL_LIMIT_MIB = 64  # the working tree and every carried path of one device call
MARGIN_MIB = 2
# The image's onnxruntime is 1.30.0 (the device tool's KINDS.md); onnxruntime-gpu 1.30.0 is built for CUDA 13,
# which the image's torch (cu130) and nvidia-* packages provide.
ORT_GPU = "onnxruntime-gpu==1.30.0"
PURE_PYTHON = ("hydra-core", "omegaconf", "antlr4-python3-runtime")
# The device's python3 (3.12, x86-64) is not this one: wheels are fetched for it.
TARGET = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
          *[a for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                        "manylinux2014_x86_64") for a in ("--platform", p)]]


def sha256(path: Path) -> str:
    # genie_robot.runtime.manifest.sha256's twin, kept here: join runs on the device before onnxruntime-gpu is in
    # place, with the standard library alone (importing genie_robot.runtime would import onnxruntime)
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def travelling_bytes(root: Path = ROOT) -> int:
    """What every device call sends anyway: tracked files and untracked files git does not ignore."""
    out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         check=True, capture_output=True).stdout
    return sum((root / name).stat().st_size for name in out.decode().split("\0") if name and (root / name).is_file())


def part_size(extra_bytes: int, root: Path = ROOT) -> int:
    """The largest part that fits one call beside the working tree and `extra_bytes` carried with it, in bytes."""
    free = CALL_LIMIT_MIB * MIB - travelling_bytes(root) - extra_bytes - MARGIN_MIB * MIB
    if free < MIB:
        raise SystemExit(f"the working tree and .whl/ leave {free / MIB:.1f} MiB of a call's {CALL_LIMIT_MIB} MiB: "
                         f"no part fits")
    return free // MIB * MIB


def split(source: Path, dest: Path, part_bytes: int, name: str, preset: int = 9) -> dict:
    """Packs the directory `source` (tar, xz) into parts of at most `part_bytes` under dest/00, dest/01, ..."""
    if dest.exists():
        strays = [c.name for c in dest.iterdir() if not (c.is_dir() and (c / "manifest.json").is_file())]
        if strays:  # replaced only when it holds an earlier payload's parts and nothing else
            raise SystemExit(f"{dest} holds {strays[:5]}, not only the part folders of a payload: refusing to "
                             f"replace it (choose another --dest)")
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    packed = dest / "payload.tar.xz"
    with tarfile.open(packed, "w:xz", preset=preset) as tar:
        for path in sorted(source.iterdir()):
            tar.add(path, arcname=path.name)
    parts, whole = [], hashlib.sha256()  # the packed stream hashed as it is cut, as join hashes it as it joins
    with packed.open("rb") as f:
        for i, chunk in enumerate(iter(lambda: f.read(part_bytes), b"")):
            folder = dest / f"{i:02d}"
            folder.mkdir()
            (folder / "part").write_bytes(chunk)
            whole.update(chunk)
            parts.append({"folder": folder.name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    manifest = {"name": name, "packed_bytes": packed.stat().st_size, "packed_sha256": whole.hexdigest(),
                "parts": parts}
    packed.unlink()
    for part in parts:
        (dest / part["folder"] / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def join(dest: Path, into: Path) -> dict:
    """Checks every part under `dest` against the manifest and unpacks the payload into `into`."""
    manifests = sorted(dest.glob("*/manifest.json"))
    if not manifests:
        raise SystemExit(f"{dest}: no part folder with a manifest.json (carry {dest}/00 and the others first)")
    manifest = json.loads(manifests[0].read_text())
    problems = []
    for part in manifest["parts"]:
        path = dest / part["folder"] / "part"
        if not path.is_file():
            problems.append(f"{path} is missing (carry {dest}/{part['folder']}; a machine given back between "
                            f"calls starts bare)")
        elif (digest := sha256(path)) != part["sha256"]:
            problems.append(f"{path}: sha256 {digest[:12]}..., the manifest says {part['sha256'][:12]}...")
    if problems:
        raise SystemExit(f"{manifest['name']}: {len(problems)} of {len(manifest['parts'])} parts unusable; nothing "
                         f"unpacked:\n  " + "\n  ".join(problems))
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        packed = Path(tmp) / "payload.tar.xz"
        whole = hashlib.sha256()
        with packed.open("wb") as out:
            for part in manifest["parts"]:
                chunk = (dest / part["folder"] / "part").read_bytes()
                whole.update(chunk)
                out.write(chunk)
        if whole.hexdigest() != manifest["packed_sha256"]:
            raise SystemExit(f"{manifest['name']}: the joined parts' sha256 differs from the manifest's")
        with tarfile.open(packed, "r:xz") as tar:
            tar.extractall(into, filter="data")
    return manifest


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def pins(names: tuple[str, ...]) -> list[str]:
    """This repository's pins of `names` (constraints.txt), so the device runs what CI tests."""
    wanted = {n.lower(): None for n in names}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() in wanted:
            wanted[name.strip().lower()] = f"{name.strip()}=={version.strip()}"
    missing = [n for n, pin in wanted.items() if pin is None]
    if missing:
        raise SystemExit(f"constraints.txt pins no version of {missing}")
    return list(wanted.values())


def prepare(ort: str, whl: Path, dest: Path, part_mib: int | None, preset: int) -> None:
    for stale in whl.glob("*.whl") if whl.is_dir() else []:  # an earlier prepare's wheels, nothing else
        stale.unlink()
    # pure Python: built here as py3-none-any wheels (antlr4's 4.9.3 is published as a source archive only)
    pip("wheel", "-q", "--no-deps", "-w", str(whl), *pins(PURE_PYTHON))
    whl_bytes = sum(p.stat().st_size for p in whl.iterdir())
    print(f"{whl}: {', '.join(sorted(p.name for p in whl.iterdir()))} ({whl_bytes / MIB:.1f} MiB)")
    with tempfile.TemporaryDirectory() as tmp:
        pip("download", "-q", "--no-deps", *TARGET, "-d", tmp, ort)
        wheel = next(Path(tmp).glob("*.whl"))
        unpacked = Path(tmp) / "site"
        with zipfile.ZipFile(wheel) as z:
            z.extractall(unpacked)
        size = part_mib * MIB if part_mib else part_size(whl_bytes)
        manifest = split(unpacked, dest, size, wheel.name, preset)
    print(f"{dest}: {wheel.name} as {len(manifest['parts'])} parts of at most {size / MIB:.0f} MiB "
          f"({manifest['packed_bytes'] / MIB:.1f} MiB packed); carry {dest}/00 .. "
          f"{dest}/{manifest['parts'][-1]['folder']}, one a call, with .whl")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="here: fetch and pack .whl/ and the onnxruntime-gpu parts")
    p.add_argument("--ort", default=ORT_GPU)
    p.add_argument("--whl", type=Path, default=ROOT / ".whl")
    p.add_argument("--dest", type=Path, default=ROOT / ".ortgpu")
    p.add_argument("--part-mib", type=int, default=None, help="default: what a call leaves beside the tree")
    p.add_argument("--preset", type=int, default=9, help="xz preset (0-9)")
    s = sub.add_parser("split", help="pack any directory into parts")
    s.add_argument("source", type=Path)
    s.add_argument("--dest", type=Path, required=True)
    s.add_argument("--part-mib", type=float, required=True)
    s.add_argument("--preset", type=int, default=9)
    j = sub.add_parser("join", help="there: check the parts and unpack them")
    j.add_argument("dest", type=Path)
    j.add_argument("--into", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.command == "prepare":
        prepare(args.ort, args.whl, args.dest, args.part_mib, args.preset)
    elif args.command == "split":
        manifest = split(args.source, args.dest, int(args.part_mib * MIB), args.source.name, args.preset)
        print(json.dumps({"parts": len(manifest["parts"]), "packed_bytes": manifest["packed_bytes"]}))
    else:
        manifest = join(args.dest, args.into)
        print(json.dumps({"joined": manifest["name"], "parts": len(manifest["parts"]), "into": str(args.into)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
