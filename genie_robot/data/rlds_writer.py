"""Write episodes as an RLDS dataset in TFDS's on-disk format, all or nothing.

TFDS's own builder does the writing (shards, `dataset_info.json`, `features.json`), so what the
simulator and the converters (ROS 2 bags, LeRobot datasets) write is the real format by
construction and `ClipDataset` reads it unchanged. Everything is written into a hidden temporary
directory beside the destination and renamed into place at the end: an interrupted or failed
conversion leaves nothing half-written where a reader would find it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm import tqdm

from genie_robot.data.layout import DatasetError


def version_dir(data_dir: str | Path, name: str, version: str) -> Path:
    """Where a dataset lands: what `data.path` points at."""
    return Path(data_dir).resolve() / name / version


def write_rlds(
    data_dir: str | Path,
    name: str,
    version: str,
    features: Callable[[], object],
    examples: Iterable[dict],
    description: str,
    num_shards: int = 1,
    total: int | None = None,
    progress: bool = True,
    progress_desc: str = "writing episodes",
    overwrite: bool = False,
    extra_files: dict[str, str] | Callable[[], dict[str, str]] | None = None,
) -> Path:
    """Write `examples` (one dict per episode, in `features()`'s structure) as `<data_dir>/<name>/<version>`.

    `features` is called inside the builder (TFDS features are built lazily). Returns the version
    directory. An existing one is an error unless `overwrite`; it is replaced only once the new one
    is complete. `extra_files` (file name -> text, or a function returning them once every example is written)
    are written into it before it appears."""
    import tensorflow_datasets as tfds

    final = version_dir(data_dir, name, version)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; pass overwrite=true to replace it or choose another out")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create output directory {final.parent}: {e.strerror}") from e
    dataset_name = name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-{version}-partial-", dir=final.parent))
    try:
        class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
            """An RLDS episode dataset filled from `examples`."""

            name = dataset_name
            VERSION = tfds.core.Version(version)

            def _info(self) -> tfds.core.DatasetInfo:
                return tfds.core.DatasetInfo(
                    builder=self, description=description, features=features(),
                    homepage="https://github.com/genie-robot/genie-robot")

            def _split_generators(self, dl_manager):
                return {"train": self._generate_examples()}

            def _generate_examples(self):
                stream = tqdm(examples, total=total, desc=progress_desc, unit="ep", disable=not progress)
                yield from enumerate(stream)

        tfds.disable_progress_bar()
        builder = Builder(data_dir=str(staging))
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(num_shards=num_shards), file_format="tfrecord")
        except AssertionError as e:  # TFDS: fewer examples than shards, or none at all
            raise DatasetError(f"cannot write {final}: {e}") from e
        written = staging / name / version
        for fname, text in ((extra_files() if callable(extra_files) else extra_files) or {}).items():
            (written / fname).write_text(text)
        if final.exists():
            shutil.rmtree(final)
        written.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
