"""DDP, 2 CPU processes (gloo, Lightning ``ddp_fork``): disjoint training shards, test images seen once."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torchmetrics

from pixel_lightning.data import CIFAR10DataModule

N_TRAIN, N_TEST, EPOCHS = 20, 7, 2


class Recorder(pl.LightningModule):
    """Records the labels (unique ids here) each rank trains and tests on; sums test images as a metric."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out, self.w = out, torch.nn.Parameter(torch.zeros(()))
        self.seen: list[np.ndarray] = []
        self.test_images = torchmetrics.SumMetric()

    def training_step(self, batch, _):
        x, y = batch
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32)
        self.seen.append(y.numpy())
        return (self.w - x.float().mean()) ** 2

    def on_train_epoch_end(self) -> None:
        np.save(f"{self.out}/train_e{self.current_epoch}_r{self.global_rank}.npy", np.concatenate(self.seen))
        self.seen = []

    def test_step(self, batch, _):
        self.seen.append(batch[1].numpy())
        self.test_images.update(torch.tensor(float(len(batch[1]))))

    def on_test_epoch_end(self) -> None:
        np.save(f"{self.out}/test_r{self.global_rank}.npy", np.concatenate(self.seen))
        total = self.test_images.compute()  # synced over ranks: the figure a run reports
        if self.global_rank == 0:
            np.save(f"{self.out}/test_total.npy", total.numpy())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_ddp_two_processes(tmp_path: Path, data_write):
    images = data_write.photos(N_TRAIN + N_TEST)
    ids = np.arange(N_TRAIN + N_TEST)
    batches = {f"data_batch_{i + 1}": (images[4 * i : 4 * i + 4], ids[4 * i : 4 * i + 4]) for i in range(5)}
    batches["test_batch"] = (images[N_TRAIN:], ids[N_TRAIN:])
    data_write.cifar(tmp_path / "cifar-10-batches-py", batches)
    dm = CIFAR10DataModule(data_dir=tmp_path, strict=False, val_size=0, batch_size=3, seed=5)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_fork",
        use_distributed_sampler=False,
        max_epochs=EPOCHS,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = Recorder(str(tmp_path))
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm)

    orders = []
    for epoch in range(EPOCHS):
        r0, r1 = (np.load(tmp_path / f"train_e{epoch}_r{r}.npy") for r in (0, 1))
        assert len(r0) == len(r1) == N_TRAIN // 2  # same number of steps on every rank
        assert not set(r0) & set(r1)  # disjoint shards
        assert sorted(np.concatenate([r0, r1])) == list(range(N_TRAIN))  # together: the whole training set
        orders.append(np.concatenate([r0, r1]))
    assert not np.array_equal(orders[0], orders[1])  # reshuffled each epoch (Lightning calls set_epoch)

    t0, t1 = (np.load(tmp_path / f"test_r{r}.npy") for r in (0, 1))
    assert (len(t0), len(t1)) == (4, 3)  # uneven shards, no duplicate padding
    test_ids = ids[N_TRAIN:]  # batches of 3: [0 1 2] [3 4 5] [6], dealt round-robin to the ranks
    np.testing.assert_array_equal(t0, test_ids[[0, 1, 2, 6]])  # each test image once, in source order
    np.testing.assert_array_equal(t1, test_ids[3:6])
    assert float(np.load(tmp_path / "test_total.npy")) == N_TEST  # the reported metric counts 7, not 8
