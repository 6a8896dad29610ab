"""CIFAR-10 (3 x 32 x 32, levels 256): 50,000 train / 10,000 test; the paper's Table 5 (bits/dim).

Sources: ``"python"``, the python release (``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz`` as
downloaded from https://www.cs.toronto.edu/~kriz/cifar.html), and ``"hub"`` (``uoft-cs/cifar10``). The
validation split is the last ``val_size`` images of the training set in source order (default 5,000; 0
allowed): train + val is exactly the original training set.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from .base import ImageDataModule
from .sources import Plan, hub_blocks, load_hub, read_cifar_batch, read_tar_members, verify_md5

FOLDER = "cifar-10-batches-py"
TARBALL = "cifar-10-python.tar.gz"
TARBALL_MD5 = "c58f30108f718f92721af3b95e74349a"  # published on the CIFAR page
BATCH_MD5 = {  # the md5 of each file in that tarball (as listed by torchvision)
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
HELP = (
    f"Put the CIFAR-10 python release into data_dir: either {TARBALL} as downloaded from "
    f"https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, or its extracted folder {FOLDER}/ "
    "(data_batch_1 .. data_batch_5, test_batch)"
)


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10: x uint8 (B, 3, 32, 32) in [0, 256); y the class (0..9).

    Args:
        data_dir: where ``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz`` is
            (default ``data_cache/cifar10``).
        source: ``"auto"`` (the python release found in data_dir, else the Hub), ``"python"``, ``"hub"``.
        val_size: the last ``val_size`` training images, held out for validation (default 5,000; 0 allowed).
    """

    name = "cifar10"
    levels = 256
    image_shape = (3, 32, 32)
    SOURCES = ("python", "hub")
    LOCAL_SOURCES = ("python",)
    VARIANTS = {"python": "cifar10-python", "hub": "hub-uoft-cs-cifar10"}
    hub_id = "uoft-cs/cifar10"

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        source: str = "auto",
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        strict: bool = True,
        val_size: int = 5000,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(data_dir, source, batch_size, num_workers, seed, strict, val_size, cache_dir)

    def _folder(self) -> Path | None:
        for folder in (self.data_dir / FOLDER, self.data_dir):
            if all((folder / name).is_file() for name in BATCH_MD5):
                return folder
        return None

    def _found(self, source: str) -> bool:
        return self._folder() is not None or (self.data_dir / TARBALL).is_file()

    def _files(self, source: str) -> list[Path]:
        if source != "python":
            return []
        folder = self._folder()
        return [folder / name for name in BATCH_MD5] if folder else [self.data_dir / TARBALL]

    def _missing_help(self) -> str:
        return HELP

    def _plan(self, source: str) -> Plan:
        expected = {"train": 50_000, "test": 10_000}
        if source == "hub":
            hub = load_hub(self.hub_id, HELP)
            return Plan(
                {s: partial(hub_blocks, hub[s], self.image_shape, f"{self.hub_id}:{s}") for s in expected},
                expected,
            )
        problems: list[str] = []
        folder = self._folder()
        if folder is not None:
            for name, md5 in BATCH_MD5.items():
                verify_md5(folder / name, md5, problems)
            splits = {s: partial(_folder_blocks, folder, names) for s, names in BATCHES.items()}
        else:
            verify_md5(self.data_dir / TARBALL, TARBALL_MD5, problems)
            splits = {s: partial(_tar_blocks, self.data_dir / TARBALL, names) for s, names in BATCHES.items()}
        return Plan(splits, expected, problems)


def _folder_blocks(folder: Path, names: list[str]):
    for name in names:
        yield read_cifar_batch((folder / name).read_bytes(), str(folder / name), (3, 32, 32))


def _tar_blocks(tarball: Path, names: list[str]):
    members = read_tar_members(tarball, [f"{FOLDER}/{name}" for name in names])
    for name in names:
        yield read_cifar_batch(members[f"{FOLDER}/{name}"], f"{tarball}:{FOLDER}/{name}", (3, 32, 32))
