"""Every bad input gets a DataError whose message names the problem and the fix."""

from __future__ import annotations

import gzip
import time

import numpy as np
import pytest

from pixel_lightning.data import (
    BinarizedMNISTDataModule,
    CIFAR10DataModule,
    DataError,
    ImageNetDataModule,
    build_datamodule,
)


def prepared(dm):
    dm.prepare_data()
    return dm


# ----------------------------------------------------------------------------- arguments


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(
        DataError, match=r"unknown dataset 'svhn'.*'mnist'.*'binarized_mnist'.*'cifar10'.*'imagenet64'"
    ):
        build_datamodule("svhn")


def test_unknown_source_lists_valid_sources():
    with pytest.raises(DataError, match=r"unknown source 'png' for cifar10.*'auto', 'python', 'hub'"):
        CIFAR10DataModule(source="png")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"batch_size": -4}, "batch_size must be an integer >= 1, got -4"),
        ({"batch_size": "16"}, "batch_size must be an integer >= 1, got '16'"),
        ({"batch_size": True}, "batch_size must be an integer >= 1, got True"),
        ({"num_workers": -1}, "num_workers must be an integer >= 0, got -1"),
        ({"val_size": -1}, "val_size must be an integer >= 0, got -1"),
        ({"seed": 1.5}, "seed must be an integer, got 1.5"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(DataError, match=message):
        build_datamodule("cifar10", **kwargs)


def test_bad_mnist_binarization_and_imagenet_size():
    with pytest.raises(
        DataError, match=r"binarization must be one of \('threshold', 'stochastic'\), got 'half'"
    ):
        BinarizedMNISTDataModule(binarization="half")
    with pytest.raises(DataError, match="amat files are already binarized"):
        BinarizedMNISTDataModule(source="amat", binarization="stochastic")
    with pytest.raises(DataError, match="size must be 32 or 64"):
        ImageNetDataModule(size=48)


def test_val_size_larger_than_training_set_and_unknown_split(tmp_path, data_write):
    cifar_dir(tmp_path, data_write)
    dm = CIFAR10DataModule(data_dir=tmp_path, strict=False, val_size=5)
    with pytest.raises(DataError, match="val_size=5 leaves no training data \\(5 images\\)"):
        dm.setup()
    dm.val_size = 1
    with pytest.raises(DataError, match="unknown split 'valid': choose 'train', 'val' or 'test'"):
        dm.dataloader("valid")


# ----------------------------------------------------------------------------- missing files, the Hub


def test_missing_files_name_the_files_and_where_to_get_them(tmp_path):
    with pytest.raises(
        DataError, match=r"no 'amat' files in .*binarized_mnist_train\.amat.*larocheh.*embedded"
    ):
        prepared(BinarizedMNISTDataModule(data_dir=tmp_path / "nowhere", source="amat"))
    with pytest.raises(DataError, match=r"no 'python' files.*cifar-10-python\.tar\.gz.*cs\.toronto\.edu"):
        prepared(CIFAR10DataModule(data_dir=tmp_path, source="python"))
    with pytest.raises(DataError, match=r"no 'png' files.*train_64x64/ and valid_64x64/.*not comparable"):
        prepared(ImageNetDataModule(size=64, data_dir=tmp_path, source="png"))


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_hub_unreachable_with_nothing_cached_fails_fast(tmp_path, data_offline, name):
    start = time.perf_counter()
    with pytest.raises(
        DataError, match=r"not reachable .* nothing is cached\. Supply the files locally instead: Put"
    ):
        prepared(build_datamodule(name, data_dir=tmp_path))  # auto: no local files -> the Hub
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("cache_only", [False, True])
def test_hub_offline_env_fails_fast(tmp_path, monkeypatch, cache_only):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if cache_only:  # as when HF_HUB_OFFLINE=1 is set before Python starts: datasets reads only its cache
        monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", True)
        monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", tmp_path / "hf")
    start = time.perf_counter()
    message = r"not reachable .*Supply the files locally instead: Put the CIFAR-10"
    with pytest.raises(DataError, match=message):
        prepared(CIFAR10DataModule(data_dir=tmp_path, source="hub"))
    assert time.perf_counter() - start < 10


def test_imagenet_hub_needs_an_id(tmp_path):
    with pytest.raises(
        DataError, match=r"no local files .* and no hub_id given\. Put the downsampled ImageNet"
    ):
        prepared(ImageNetDataModule(size=32, data_dir=tmp_path))


# ----------------------------------------------------------------------------- truncated / corrupt files


def amat_dir(tmp_path, data_digits, data_write):
    binary = (data_digits[0] > 127).astype(np.uint8)
    for name in ("train", "valid", "test"):
        data_write.amat(tmp_path / f"binarized_mnist_{name}.amat", binary[:5])
    return tmp_path / "binarized_mnist_train.amat"


def test_truncated_amat_names_the_file_and_line(tmp_path, data_digits, data_write):
    path = amat_dir(tmp_path, data_digits, data_write)
    path.write_bytes(path.read_bytes()[:-301])
    with pytest.raises(DataError, match=r"binarized_mnist_train\.amat: line 5 has 634 values, expected 784"):
        prepared(BinarizedMNISTDataModule(data_dir=tmp_path, strict=False))


def test_corrupt_amat_names_the_file(tmp_path, data_digits, data_write):
    path = amat_dir(tmp_path, data_digits, data_write)
    text = path.read_text().splitlines()
    text[2] = text[2].replace("0", "0.5", 1)
    path.write_text("\n".join(text))
    with pytest.raises(
        DataError, match=r"binarized_mnist_train\.amat: not a binarized MNIST \.amat file .* line 3"
    ):
        prepared(BinarizedMNISTDataModule(data_dir=tmp_path, strict=False))


def test_truncated_idx_names_the_file(tmp_path, data_digits, data_write):
    images, labels = data_digits
    data_write.idx(tmp_path / "train-images-idx3-ubyte.gz", images[:10, 0])
    data_write.idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:10].astype(np.uint8))
    data_write.idx(tmp_path / "t10k-images-idx3-ubyte", images[10:15, 0])
    data_write.idx(tmp_path / "t10k-labels-idx1-ubyte", labels[10:15].astype(np.uint8))
    raw = (tmp_path / "t10k-images-idx3-ubyte").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw[:-100])
    dm = BinarizedMNISTDataModule(data_dir=tmp_path, strict=False, val_size=2)
    with pytest.raises(
        DataError, match=r"t10k-images-idx3-ubyte: the header promises .* truncated or corrupt"
    ):
        prepared(dm)
    gz = tmp_path / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-40])
    with pytest.raises(
        DataError, match=r"train-images-idx3-ubyte\.gz: cannot be read .*truncated or corrupt"
    ):
        prepared(dm)


def test_idx_checksum_mismatch_is_an_error_when_strict(tmp_path, data_digits, data_write):
    images, labels = data_digits
    data_write.idx(tmp_path / "train-images-idx3-ubyte.gz", images[:10, 0])
    data_write.idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:10].astype(np.uint8))
    data_write.idx(tmp_path / "t10k-images-idx3-ubyte.gz", images[10:15, 0])
    data_write.idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[10:15].astype(np.uint8))
    message = r"train-images-idx3-ubyte\.gz: md5 .* differs from the published f68b3c2d.*strict=False"
    with pytest.raises(DataError, match=message):
        prepared(BinarizedMNISTDataModule(data_dir=tmp_path))


def cifar_dir(tmp_path, data_write):
    images = data_write.photos(6)
    batches = {f"data_batch_{i}": (images[:1], np.zeros(1, np.int64)) for i in range(1, 6)}
    batches["test_batch"] = (images[1:], np.zeros(5, np.int64))
    data_write.cifar(tmp_path / "cifar-10-batches-py", batches)
    return tmp_path / "cifar-10-batches-py"


def test_truncated_cifar_batch_names_the_file(tmp_path, data_write):
    folder = cifar_dir(tmp_path, data_write)
    raw = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"data_batch_3: cannot be unpickled .*truncated or corrupt"):
        prepared(CIFAR10DataModule(data_dir=tmp_path, strict=False, val_size=0))


def test_cifar_checksum_and_count_are_errors_when_strict(tmp_path, data_write):
    cifar_dir(tmp_path, data_write)
    with pytest.raises(
        DataError, match=r"data_batch_1: md5 .* differs from the published c99cafc1.*strict=False"
    ):
        prepared(CIFAR10DataModule(data_dir=tmp_path, val_size=0))


def test_cifar_record_count_is_an_error_when_strict(tmp_path, data_write, monkeypatch):
    cifar_dir(tmp_path, data_write)
    monkeypatch.setattr("pixel_lightning.data.cifar10.verify_md5", lambda *args: None)  # only the count fails
    with pytest.raises(DataError, match=r"split 'train' has 5 images, the release has 50000.*strict=False"):
        prepared(CIFAR10DataModule(data_dir=tmp_path, val_size=0))


def test_truncated_cifar_tarball_names_the_file(tmp_path, data_write):
    folder = cifar_dir(tmp_path / "src", data_write)
    tarball = tmp_path / "cifar-10-python.tar.gz"
    data_write.tar(tarball, folder, "cifar-10-batches-py")
    tarball.write_bytes(tarball.read_bytes()[:-2000])
    with pytest.raises(
        DataError, match=r"cifar-10-python\.tar\.gz: md5 .* differs from the published c58f3010"
    ):
        prepared(CIFAR10DataModule(data_dir=tmp_path))
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz.*truncated"):
        prepared(CIFAR10DataModule(data_dir=tmp_path, strict=False))


def test_cifar_rows_of_the_wrong_size(tmp_path, data_write):
    grey = data_write.photos(6)[:, :1]  # 1 x 32 x 32 = 1024 values a row
    batches = {f"data_batch_{i}": (grey[:1], np.zeros(1, np.int64)) for i in range(1, 6)}
    batches["test_batch"] = (grey[1:], np.zeros(5, np.int64))
    data_write.cifar(tmp_path / "cifar-10-batches-py", batches)
    with pytest.raises(DataError, match=r"data_batch_1: rows of 1024 values, CIFAR-10 needs 3072"):
        prepared(CIFAR10DataModule(data_dir=tmp_path, strict=False))


def png_dirs(tmp_path, data_write, train_images):
    data_write.pngs(tmp_path / "train_32x32", train_images, [f"{i}.png" for i in range(len(train_images))])
    data_write.pngs(tmp_path / "valid_32x32", data_write.photos(2), ["a.png", "b.png"])


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (lambda w: w.photos(2, 64), r"train_32x32/0\.png: image is 64x64 but this dataset needs 32x32"),
        (
            lambda w: w.photos(2)[:, :1],
            r"train_32x32/0\.png: a L image with 1 channel\(s\), this dataset needs 3",
        ),
    ],
)
def test_png_of_the_wrong_size_or_channels(tmp_path, data_write, images, message):
    png_dirs(tmp_path, data_write, images(data_write))
    with pytest.raises(DataError, match=message):
        prepared(ImageNetDataModule(size=32, data_dir=tmp_path, strict=False))


def test_truncated_png_and_png_tar(tmp_path, data_write):
    png_dirs(tmp_path / "src", data_write, data_write.photos(3))
    (tmp_path / "dl").mkdir()
    for stem in ("train_32x32", "valid_32x32"):
        data_write.tar(tmp_path / "dl" / f"{stem}.tar", tmp_path / "src" / stem, stem)
    bad = tmp_path / "src" / "train_32x32" / "1.png"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataError, match=r"train_32x32/1\.png: not a readable PNG .*truncated or corrupt"):
        prepared(ImageNetDataModule(size=32, data_dir=tmp_path / "src", strict=False))
    tar = tmp_path / "dl" / "valid_32x32.tar"
    tar.write_bytes(tar.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"valid_32x32\.tar.*truncated"):
        prepared(ImageNetDataModule(size=32, data_dir=tmp_path / "dl", strict=False))


def test_png_count_is_an_error_when_strict(tmp_path, data_write):
    png_dirs(tmp_path, data_write, data_write.photos(3))
    with pytest.raises(
        DataError, match=r"train_32x32 holds 3 PNG files, the release has 1281149.*strict=False"
    ):
        prepared(ImageNetDataModule(size=32, data_dir=tmp_path))


def test_npz_truncated_or_of_the_other_size(tmp_path, data_write):
    data_write.npz(
        tmp_path / "Imagenet32_train_npz" / "train_data_batch_1.npz", data_write.photos(2), np.ones(2)
    )
    data_write.npz(tmp_path / "Imagenet32_val_npz" / "val_data.npz", data_write.photos(2, 64), np.ones(2))
    with pytest.raises(
        DataError, match=r"val_data\.npz: rows of 12288 values but 3x32x32 needs 3072.*Imagenet64"
    ):
        prepared(ImageNetDataModule(size=32, data_dir=tmp_path, strict=False))
    train = tmp_path / "Imagenet32_train_npz" / "train_data_batch_1.npz"
    train.write_bytes(train.read_bytes()[:500])
    with pytest.raises(DataError, match=r"train_data_batch_1\.npz: not a readable ImageNet npz batch"):
        prepared(ImageNetDataModule(size=32, data_dir=tmp_path, strict=False))


def test_gzip_garbage_is_reported(tmp_path):
    for name in ("train", "valid", "test"):
        (tmp_path / f"binarized_mnist_{name}.amat").write_bytes(gzip.compress(b"0 1"))
    with pytest.raises(DataError, match=r"binarized_mnist_train\.amat: not a binarized MNIST \.amat file"):
        prepared(BinarizedMNISTDataModule(data_dir=tmp_path, strict=False))
