"""Loader throughput: images/second of the training loader for 32x32 RGB (CIFAR-10 layout).

Writes a synthetic CIFAR-10 python release (random pixels) into a temp dir, converts it once through
``CIFAR10DataModule`` and times whole epochs of the shuffled training loader (the hot path a Trainer sees)
for num_workers 0 and 2 and batch sizes 16 (the paper's) and 64. Figures and machine: benchmarks/LOADER.md.

    PYTHONPATH=. python benchmarks/loader.py            # 50,000 images, 2 epochs
    PYTHONPATH=. python benchmarks/loader.py --quick    # 5,000 images, 1 epoch (a smoke test)
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from pixel_lightning.data import CIFAR10DataModule


def write_fake_cifar(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per = n // 5
    for name, count in [(f"data_batch_{i}", per) for i in range(1, 6)] + [("test_batch", per)]:
        batch = {b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8), b"labels": [0] * count}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))


def images_per_second(dm: CIFAR10DataModule, epochs: int) -> float:
    loader = dm.train_dataloader()
    n, start = 0, None
    for _ in range(epochs):
        for x, _ in loader:
            if start is None:  # the first batch pays worker start-up: not counted
                start = time.perf_counter()
                continue
            n += len(x)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5,000 images, 1 epoch")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    n = args.images or (5_000 if args.quick else 50_000)
    epochs = args.epochs or (1 if args.quick else 2)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"{n} images of 3x32x32, {epochs} epoch(s) of the shuffled training loader")
    with tempfile.TemporaryDirectory() as tmp:
        write_fake_cifar(Path(tmp) / "cifar-10-batches-py", n)
        t0 = time.perf_counter()
        CIFAR10DataModule(data_dir=tmp, strict=False, val_size=0).prepare_data()
        print(f"conversion to Arrow (once): {time.perf_counter() - t0:.1f} s")
        for workers in (0, 2):
            for batch_size in (16, 64):
                dm = CIFAR10DataModule(
                    data_dir=tmp, strict=False, val_size=0, batch_size=batch_size, num_workers=workers
                )
                dm.setup("fit")
                rate = images_per_second(dm, epochs)
                print(f"num_workers={workers} batch_size={batch_size:3d}: {rate:10,.0f} images/s")


if __name__ == "__main__":
    main()
