"""The shared DataModule: convert a source once into a memory-mapped Arrow dataset, then serve whole batches.

Flow::

    files --Plan (sources.py)--> prepare_data: Dataset.from_generator -> save_to_disk (temp dir, renamed)
                                 setup:        load_from_disk -> zero-copy numpy views of the Arrow column
                                 *_dataloader: batch sampler -> (x uint8 (B,C,H,W), y int64 (B,))

Images are stored one binary cell per image (C*H*W bytes), so a batch is a gather over numpy views of the
memory-mapped file: no per-item ``__getitem__`` of a Hugging Face ``Dataset`` on the hot path.

Distributed: when ``torch.distributed`` is initialized with world size > 1, the loaders shard the data
themselves (training: a disjoint, per-epoch reshuffled shard per rank; evaluation: every example exactly once,
no duplicate padding). Build the Trainer with ``use_distributed_sampler=False`` so Lightning keeps them.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets
import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset, Sampler

from pixel_lightning.atomic import temp_path

from .errors import DataError, DataWarning
from .sources import BlockReader, Plan, fingerprint

FEATURES = datasets.Features({"image": datasets.Value("binary"), "label": datasets.Value("int64")})
META = "pixel_lightning.json"  # written last inside the temp dir: its presence marks a complete conversion
FORMAT_VERSION = 1
Transform = Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # (x, rows, epoch) -> x
USER_VARIANT = "user-"  # the user's own files (e.g. "user-png"): no paper figure belongs beside them


def writable(folder: Path) -> bool:
    """Can ``folder`` be written, or created inside its nearest existing parent?"""
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def user_cache_dir(data_dir: Path) -> Path:
    """The conversions of a read-only ``data_dir``: ``$XDG_CACHE_HOME/pixel-lightning/<name>-<hash>``
    (default ``~/.cache``), one folder per data folder."""
    import hashlib

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pixel-lightning"
    resolved = str(Path(data_dir).resolve())
    return root / f"{Path(resolved).name}-{hashlib.sha1(resolved.encode()).hexdigest()[:12]}"


def cache_error(path: Path, error: OSError) -> DataError:
    return DataError(
        f"cannot write the converted data to {path} ({error.strerror or error}): the Arrow cache needs a "
        "writable folder; set data.cache_dir=DIR (cache_dir= in Python) to one"
    )


def is_user_data(variant: str | None) -> bool:
    """Is ``variant`` the user's own data rather than a release the paper measured on?"""
    return str(variant or "").startswith(USER_VARIANT)


# ----------------------------------------------------------------------------- conversion (prepare_data)


def _rows(blocks: BlockReader, shape: tuple[int, int, int]) -> Iterator[dict[str, Any]]:
    for images, labels in blocks():
        assert images.dtype == np.uint8 and images.shape[1:] == tuple(shape), (images.dtype, images.shape)
        for image, label in zip(images, labels, strict=True):
            yield {"image": image.tobytes(), "label": int(label)}


def is_complete(path: Path) -> bool:
    return (path / META).is_file()


def read_meta(path: Path) -> dict[str, Any]:
    return json.loads((path / META).read_text())


def converted_from(meta: dict[str, Any], files_fingerprint: list) -> bool:
    """Is the conversion described by ``meta`` current: this format, made from these source files?"""
    return meta["format"] == FORMAT_VERSION and meta["fingerprint"] == files_fingerprint


def _remove_stale_temps(final: Path) -> None:
    """Temp dirs of conversions whose process is gone (killed): never read, just removed."""
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        pid = int(tmp.name.split("-")[-2]) if tmp.name.split("-")[-2].isdigit() else -1
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, ValueError, OverflowError):
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass


def _generate(plan: Plan, shape: tuple[int, int, int], tmp: Path) -> dict[str, datasets.Dataset]:
    """One Arrow dataset per split; a reader's DataError comes out as itself, not wrapped by ``datasets``."""
    splits = {}
    for name, blocks in plan.splits.items():
        try:
            splits[name] = datasets.Dataset.from_generator(
                _rows,
                features=FEATURES,
                gen_kwargs={"blocks": blocks, "shape": shape},
                cache_dir=str(tmp / "generator"),
                fingerprint=uuid.uuid4().hex,
                split=name,
            )
        except datasets.exceptions.DatasetGenerationError as e:
            cause = e.__cause__ or e.__context__
            if isinstance(cause, DataError):
                raise cause from None
            raise
    return splits


def convert(
    plan: Plan, shape: tuple[int, int, int], final: Path, meta: dict[str, Any], files_fingerprint: list
) -> dict[str, Any]:
    """Write every split of ``plan`` as Arrow under a temp dir, then rename it to ``final`` atomically.

    A conversion killed half way leaves only a ``.tmp-<pid>-*`` dir, which is never taken as complete.
    Processes that convert the same files at once (runs of a sweep started together) all end up reading
    the first one's result: a complete conversion of the same files is never replaced, as another process
    may have it memory-mapped (test_concurrent_conversion_keeps_the_first_result).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(final)
    tmp = temp_path(final)  # the project's one temp-name rule (pixel_lightning/atomic.py)
    try:
        splits = _generate(plan, shape, tmp)
        datasets.DatasetDict(splits).save_to_disk(str(tmp / "arrow"))
        counts = {name: len(ds) for name, ds in splits.items()}
        del splits
        shutil.rmtree(tmp / "generator", ignore_errors=True)
        problems = plan.problems + [
            f"split {name!r} has {counts[name]} images, the release has {n}: "
            "files missing, truncated or a subset"
            for name, n in plan.expected.items()
            if counts.get(name) != n
        ]
        meta = {
            **meta,
            "format": FORMAT_VERSION,
            "shape": list(shape),
            "counts": counts,
            "problems": problems,
            "fingerprint": files_fingerprint,
        }
        (tmp / META).write_text(json.dumps(meta, indent=1))
        if is_complete(final) and converted_from(done := read_meta(final), files_fingerprint):
            return done  # another process converted the same files meanwhile and may be reading them
        if final.exists():  # stale (the source files changed) or left incomplete
            shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


# ----------------------------------------------------------------------------- loading (setup)


class ArrowImages:
    """Zero-copy numpy views of one memory-mapped split; pickles as its path (cheap for worker processes)."""

    def __init__(self, path: Path, shape: tuple[int, int, int]) -> None:
        self.path, self.shape = Path(path), tuple(shape)
        self._open()

    def _open(self) -> None:
        table = datasets.load_from_disk(str(self.path)).data
        self.chunks = [self._view(chunk) for chunk in table.column("image").chunks]
        self.starts = np.cumsum([0] + [len(c) for c in self.chunks])
        self.labels = np.asarray(table.column("label").to_numpy(), dtype=np.int64)

    def _view(self, chunk) -> np.ndarray:
        _, offsets, data = chunk.buffers()
        offsets = np.frombuffer(offsets, dtype=np.int32)[chunk.offset : chunk.offset + len(chunk) + 1]
        d = int(np.prod(self.shape))
        if len(chunk) and not np.all(np.diff(offsets) == d):
            raise DataError(
                f"{self.path}: cached images are not {self.shape}; delete this folder to convert again"
            )
        return np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]].reshape(-1, *self.shape)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Images ``rows`` as a new uint8 array (B, C, H, W)."""
        out = np.empty((len(rows), *self.shape), dtype=np.uint8)
        chunk_of = np.searchsorted(self.starts, rows, side="right") - 1
        for i, (c, r) in enumerate(
            zip(chunk_of.tolist(), (rows - self.starts[chunk_of]).tolist(), strict=True)
        ):
            out[i] = self.chunks[c][r]
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "shape": self.shape}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.shape = state["path"], state["shape"]
        self._open()


class ImageBatches(Dataset):
    """A map-style dataset indexed by whole batches: ``ds[(epoch, positions)] -> (x, y)``."""

    def __init__(self, store: ArrowImages, rows: np.ndarray, transform: Transform | None = None) -> None:
        self.store, self.rows, self.transform = store, rows, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: tuple[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        epoch, positions = item
        rows = self.rows[positions]
        x = self.store.take(rows)
        if self.transform is not None:
            x = self.transform(x, rows, epoch)
        return x, self.store.labels[rows]


def _as_is(batch: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return batch


def ignore_stop_signals(worker_id: int) -> None:
    """In a loader worker: SIGTERM, SIGUSR1 and SIGINT are the main process's to act on. A scheduler (and
    a Ctrl-C) signals every process of the job; a worker killed by it fails the main process's next
    fetch before the preemption checkpoint is written (tests/test_journey_matrix.py, the 2-worker DDP
    sigterm cases). The workers still end with the main process (torch watches their parent)."""
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


class BatchLoader(DataLoader):
    """A DataLoader over :class:`ImageBatches` that turns its numpy batches into tensors (no copy).

    Workers send numpy arrays, pickled through the pipe: at batch 16 that is about 5x cheaper than the
    shared-memory tensors a plain DataLoader would send (measured: benchmarks/LOADER.md).

    Resumable mid-epoch (Lightning saves and restores a training loader that has ``state_dict`` /
    ``load_state_dict``): the state is its sampler's position, and a batch counts as consumed here, in the
    main process, when it is handed to the caller (Lightning's fetcher does not read ahead of a loader with
    a length), not when a worker is sent its indices. Worker seeds are drawn from the loader's own
    generator, not torch's global one, so creating iterators (once per process with persistent workers)
    does not move the global generator that a resumed run restores
    (tests/test_reliability.py::test_resume_is_exact_with_random_draws_in_the_step_and_two_workers).
    """

    def __init__(self, dataset: ImageBatches, sampler: ShardedBatchSampler, num_workers: int = 0) -> None:
        super().__init__(
            dataset,
            sampler=sampler,
            batch_size=None,
            collate_fn=_as_is,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(sampler.seed),
            worker_init_fn=ignore_stop_signals,
        )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in super().__iter__():
            self.sampler.consumed()
            yield torch.from_numpy(x), torch.from_numpy(y)

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


class ShardedBatchSampler(Sampler):
    """Batches of positions for one rank, yielded as ``(epoch, positions)``.

    ``shuffle=True`` (training): a permutation seeded by ``(seed, epoch)``, cut to a multiple of the world
    size (at most ``world_size - 1`` examples left out, different ones each epoch) so every rank runs the same
    number of steps, then dealt round-robin: shards are disjoint. ``shuffle=False`` (evaluation): the
    source-ordered batches dealt round-robin (rank r gets batches r, r + world_size, ...): every example
    exactly once, and the first k batches of every rank are together the first k * world_size batches of
    one process (what ``pixel-lightning test`` re-evaluates). Lightning calls ``set_epoch``; without it the
    epoch advances on every pass.

    Its state is its position, ``{"epoch", "batches"}``: the pass in progress and how many of its batches
    were consumed (:meth:`consumed`, called by :class:`BatchLoader` as it hands a batch over). After
    :meth:`load_state_dict` the next pass of that epoch starts after those batches. The order is a function
    of (seed, epoch) only, so the position is exact whatever reads indices ahead (worker processes,
    persistent or not, and iterators DataLoader makes and drops).
    """

    def __init__(
        self, n: int, batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self._explicit_epoch = 0, False
        self.position = {"epoch": 0, "batches": 0}  # of the pass in progress
        self._start: dict[str, int] | None = None  # a restored position, until its pass consumes a batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._explicit_epoch = epoch, True

    def batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches of positions in ``epoch``, in order."""
        if not self.shuffle:
            every = np.array_split(np.arange(self.n), range(self.batch_size, self.n, self.batch_size))
            return every[self.rank :: self.world_size] if self.n else []
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        mine = perm[: self.n // self.world_size * self.world_size][self.rank :: self.world_size]
        return [mine[i : i + self.batch_size] for i in range(0, len(mine), self.batch_size)]

    def positions(self) -> np.ndarray:
        """This rank's positions in the next pass, in order."""
        return np.concatenate([np.zeros(0, dtype=np.int64), *self.batches(self.epoch)])

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        epoch = self.epoch
        if not self._explicit_epoch:
            self.epoch += 1
        start = self._start["batches"] if self._start and self._start["epoch"] == epoch else 0
        self.position = {"epoch": epoch, "batches": start}
        for batch in self.batches(epoch)[start:]:
            yield epoch, batch

    def consumed(self) -> None:
        """One more batch of the pass in progress was handed to the training step."""
        self.position["batches"] += 1
        self._start = None

    def state_dict(self) -> dict[str, int]:
        return dict(self.position)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        batches = state.get("batches", state.get("yielded", 0))  # "yielded": checkpoints made before issue 19
        self._start = {"epoch": int(state["epoch"]), "batches": int(batches)}
        if not self._explicit_epoch:
            self.epoch = self._start["epoch"]

    def __len__(self) -> int:
        if not self.shuffle:
            return len(range(self.rank, math.ceil(self.n / self.batch_size), self.world_size))
        return math.ceil(self.n // self.world_size / self.batch_size)


def dist_info() -> tuple[int, int]:
    """(rank, world size) of an initialized ``torch.distributed`` group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# ----------------------------------------------------------------------------- the DataModule


class ImageDataModule(pl.LightningDataModule):
    """Base of every dataset: sources, conversion, checks, splits and loaders.

    Subclasses set ``name``, ``levels``, ``image_shape``, ``SOURCES`` (``LOCAL_SOURCES`` in auto-detection
    order), ``VARIANTS`` and implement ``_found``, ``_plan`` and ``_missing_help``.

    Loaders yield ``(x, y)``: x uint8 (B, C, H, W) in [0, levels), y int64 (-1 where the source has none).
    Single process: training is shuffled with a generator seeded by ``(seed, epoch)``; evaluation keeps the
    source order. Under DDP the loaders shard by rank themselves: build the Trainer with
    ``use_distributed_sampler=False``.
    """

    name: str = ""
    levels: int = 256
    image_shape: tuple[int, int, int] = (3, 32, 32)
    SOURCES: tuple[str, ...] = ("hub",)
    LOCAL_SOURCES: tuple[str, ...] = ()
    VARIANTS: dict[str, str] = {}
    hub_id: str | None = None

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        source: str = "auto",
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        strict: bool = True,
        val_size: int = 0,
        cache_dir: str | os.PathLike | None = None,
        **checked: Any,  # a subclass's own arguments, for check_args
    ) -> None:
        super().__init__()
        given = {"batch_size": batch_size, "num_workers": num_workers, "seed": seed, "val_size": val_size}
        self.check_args(source=source, **given, **checked)
        self.data_dir = Path(data_dir if data_dir is not None else f"data_cache/{self.name}")
        self.cache_given = cache_dir is not None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.data_dir / "arrow"
        self.source, self.batch_size, self.num_workers = source, batch_size, num_workers
        self.seed, self.strict, self.val_size = seed, strict, val_size
        self.source_used: str | None = None
        self.variant: str | None = None
        self._meta: dict[str, Any] | None = None
        self._splits: dict[str, ImageBatches] = {}

    @classmethod
    def check_args(
        cls,
        source: str = "auto",
        batch_size: Any = 16,
        num_workers: Any = 0,
        seed: Any = 0,
        val_size: Any = 0,
        prefix: str = "",
        **_: Any,
    ) -> None:
        """DataError for a constructor argument no run can use. The constructor calls it, and so does
        ``RunConfig.validate``, before anything is built (``prefix="data."``: the names in a run config);
        a subclass with arguments of its own extends it."""
        if source != "auto" and source not in cls.SOURCES:
            raise DataError(
                f"unknown {prefix}source {source!r} for {cls.name}: choose one of {['auto', *cls.SOURCES]}"
            )
        for arg, value, low in [
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
            ("val_size", val_size, 0),
        ]:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise DataError(f"{prefix}{arg} must be an integer >= {low}, got {value!r}")
        if not isinstance(seed, int):
            raise DataError(f"seed must be an integer, got {seed!r}")

    # -- subclass hooks
    def _found(self, source: str) -> bool:
        """Are the local files of ``source`` in ``data_dir``?"""
        raise NotImplementedError

    def _files(self, source: str) -> list[Path]:
        """The local files of ``source`` (fingerprinted: when they change, the source is converted again)."""
        return []

    def _plan(self, source: str) -> Plan:
        raise NotImplementedError

    def _missing_help(self) -> str:
        """Which files go where, and where to get them."""
        raise NotImplementedError

    def _variant(self, source: str) -> str:
        return self.VARIANTS[source]

    def _transform(self, split: str) -> Transform | None:
        return None

    # -- sources
    def _cache_path(self, source: str) -> Path:
        """Where ``source``'s conversion is: in ``cache_dir``; by default ``<data_dir>/arrow``, or, when that
        cannot be written (a shared, read-only data folder) and holds no conversion of ``source``, a
        folder of the user's cache (:func:`user_cache_dir`)."""
        key = source if source != "hub" else f"hub-{str(self.hub_id).replace('/', '--')}"
        path = self.cache_dir / key
        if self.cache_given or is_complete(path) or writable(self.cache_dir):
            return path
        return user_cache_dir(self.data_dir) / key

    def _resolve(self) -> str:
        """The source to use: the explicit one, else local files, else an earlier conversion, else the Hub."""
        if self.source != "auto":
            return self.source
        for source in self.LOCAL_SOURCES:
            if self._found(source):
                rank_zero_info(
                    f"[{self.name}] source='auto': using local '{source}' files in {self.data_dir}"
                )
                return source
        for source in (*self.LOCAL_SOURCES, "hub"):
            if is_complete(self._cache_path(source)):
                rank_zero_info(
                    f"[{self.name}] source='auto': using the converted '{source}' data in {self.cache_dir}"
                )
                return source
        rank_zero_info(
            f"[{self.name}] source='auto': no local files in {self.data_dir}, trying the Hub ({self.hub_id})"
        )
        return "hub"

    def _check(self, problems: list[str]) -> None:
        """Failed record-count / checksum checks: an error when strict, else warnings."""
        if not problems:
            return
        if self.strict:
            raise DataError(
                f"{self.name}: "
                + "; ".join(problems)
                + ". Fix the files, or pass strict=False to use them anyway "
                "(for subsets and test fixtures)"
            )
        for problem in problems:
            rank_zero_warn(f"{self.name} (strict=False): {problem}", category=DataWarning)

    # -- LightningDataModule
    def prepare_data(self) -> None:
        """Convert the source into Arrow once (idempotent; done again only when the source files changed)."""
        source = self._resolve()
        path = self._cache_path(source)
        meta = read_meta(path) if is_complete(path) else None
        if source in self.LOCAL_SOURCES and not self._found(source):
            if meta is None:
                raise DataError(
                    f"{self.name}: no '{source}' files in {self.data_dir}. {self._missing_help()}"
                )
            # the raw files are gone but were converted earlier: the conversion is the data
        elif meta is None or not converted_from(meta, fingerprint(self._files(source))):
            plan = self._plan(source)
            self._check(plan.problems)  # checksum failures stop before the (long) conversion
            rank_zero_info(f"[{self.name}] converting '{source}' into {path} (once)")
            info = {"dataset": self.name, "source": source, "variant": self._variant(source)}
            try:
                meta = convert(plan, self.image_shape, path, info, fingerprint(self._files(source)))
            except PermissionError as e:  # EACCES, EPERM
                raise cache_error(path, e) from e
            except OSError as e:
                if e.errno not in (errno.EROFS, errno.ENOSPC, errno.EDQUOT):
                    raise
                raise cache_error(path, e) from e
        self._check(meta["problems"])
        self.source_used, self.variant, self._meta = source, meta["variant"], meta

    def setup(self, stage: str | None = None) -> None:
        """Load the converted Arrow data (memory-mapped) and cut the splits."""
        source = self._resolve()
        path = self._cache_path(source)
        if self._meta is None or self.source_used != source or not is_complete(path):
            self.prepare_data()
        store = {
            split: ArrowImages(path / "arrow" / split, self.image_shape) for split in self._meta["counts"]
        }
        train_rows = np.arange(len(store["train"]))
        if "val" in store:
            val = ("val", np.arange(len(store["val"])))
        else:
            if self.val_size >= len(train_rows):
                raise DataError(
                    f"val_size={self.val_size} leaves no training data ({len(train_rows)} images)"
                )
            cut = len(train_rows) - self.val_size
            val, train_rows = ("train", train_rows[cut:]), train_rows[:cut]
        parts = {"train": ("train", train_rows), "val": val, "test": ("test", np.arange(len(store["test"])))}
        self._splits = {
            split: ImageBatches(store[name], rows, self._transform(split))
            for split, (name, rows) in parts.items()
        }

    def dataloader(self, split: str, shuffle: bool | None = None) -> DataLoader:
        """The loader of ``split`` ("train", "val", "test"); shuffled by default only for "train".

        ``dataloader("train", shuffle=False)`` walks the training set in source order (e.g. to report the
        training NLL, as the paper does in parentheses).
        """
        if split not in ("train", "val", "test"):
            raise DataError(f"unknown split {split!r}: choose 'train', 'val' or 'test'")
        if not self._splits:
            self.setup()
        data = self._splits[split]
        rank, world = dist_info()
        shuffle = split == "train" if shuffle is None else shuffle
        sampler = ShardedBatchSampler(len(data), self.batch_size, shuffle, self.seed, rank, world)
        return BatchLoader(data, sampler, self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train")

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test")

    def describe(self) -> dict[str, Any]:
        """What a run config records: dataset, source, variant and split sizes."""
        return {
            "dataset": self.name,
            "source": self.source_used or self.source,
            "variant": self.variant,
            "image_shape": list(self.image_shape),
            "levels": self.levels,
            "data_dir": str(self.data_dir),
            "splits": {split: len(data) for split, data in self._splits.items()},
            "seed": self.seed,
            "strict": self.strict,
        }
