import pytest
import torch

from conftest import require_system, write_cifar10, write_mnist
from lab.datasets import DEBIAN_FASHION_MNIST, DataError, DeviceLoader, ImageSet, load_raw, make_splits, synthetic_set
from lab.models import ConfigError


def test_cifar10_loads_from_torchvision_layout(tmp_path):
    write_cifar10(tmp_path, n_train=500, n_test=100)
    train, test = load_raw("cifar10", tmp_path, download=False)
    assert train.images.shape == (500, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (100, 3, 32, 32) and test.labels.dtype == torch.int64
    splits = make_splits("cifar10", tmp_path, val_fraction=0.1, download=False)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (450, 50, 100)
    assert splits.mean.shape == (3,) and (splits.std > 0).all()


def test_cifar_pixel_order_is_channel_major(tmp_path):
    import pickle

    import numpy as np

    folder = write_cifar10(tmp_path, n_train=5, n_test=1)
    img = np.zeros((1, 3072), dtype=np.uint8)
    img[0, :1024] = 200  # the red plane comes first in CIFAR rows
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": img, "labels": [3]}, f)
    _, test = load_raw("cifar10", tmp_path, download=False)
    assert test.images[0, 0].eq(200).all() and test.images[0, 1:].eq(0).all() and test.labels.tolist() == [3]


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files(tmp_path, gz):
    write_mnist(tmp_path / "MNIST" / "raw", gz=gz)
    train, test = load_raw("mnist", tmp_path, download=False)
    assert train.images.shape == (300, 1, 28, 28) and test.images.shape == (60, 1, 28, 28)


def test_corrupt_idx_is_a_clear_error(tmp_path):
    folder = write_mnist(tmp_path / "MNIST" / "raw")
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_raw("mnist", tmp_path, download=False)


def test_debian_fashion_mnist():
    if not DEBIAN_FASHION_MNIST.exists():
        if require_system():
            pytest.fail("Debian's dataset-fashion-mnist is not installed")
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    train, test = load_raw("fashion-mnist", "/nonexistent", download=False)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert sorted(train.labels.unique().tolist()) == list(range(10))


def test_missing_data_offline_says_where_it_looked(tmp_path):
    with pytest.raises(DataError) as err:
        load_raw("cifar10", tmp_path / "nothing", download=False)
    msg = str(err.value)
    assert "not found" in msg and str(tmp_path / "nothing") in msg and "--dataset synthetic" in msg


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    import lab.datasets

    def offline(name, root):
        raise OSError("network is unreachable")

    monkeypatch.setattr(lab.datasets, "_download", offline)
    with pytest.raises(DataError, match="the download failed .*network is unreachable"):
        load_raw("cifar100", tmp_path, download=True)


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="unknown data set 'imagenet'"):
        load_raw("imagenet")


def test_synthetic_is_deterministic_and_balanced():
    a, b = synthetic_set(500, seed=3), synthetic_set(500, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, synthetic_set(500, seed=4).images)
    counts = torch.bincount(a.labels, minlength=10)
    assert counts.min() > 20


def _loader(images, augment, flip=True):
    data = ImageSet(images, torch.arange(len(images)))
    return DeviceLoader(data, torch.zeros(images.shape[1]), torch.ones(images.shape[1]) / 255, torch.device("cpu"),
                        batch_size=len(images), augment=augment, flip=flip, generator=torch.Generator().manual_seed(0))


def test_augmentation_is_a_shifted_window_of_the_padded_image():
    images = torch.randint(1, 255, (64, 3, 8, 8), dtype=torch.uint8)
    loader = _loader(images, augment=True, flip=False)
    x, y = loader.batch(torch.arange(64))
    original = images.float()
    padded = torch.nn.functional.pad(original, (4, 4, 4, 4))
    for i in range(64):
        windows = [padded[i, :, r : r + 8, c : c + 8] for r in range(9) for c in range(9)]
        assert any(torch.equal(x[i], w) for w in windows), i
    assert len({tuple(x[i].flatten()[:5].tolist()) for i in range(64)}) > 1


def test_flip_only_mirrors():
    images = torch.randint(0, 255, (200, 1, 6, 6), dtype=torch.uint8)
    loader = _loader(images, augment=True)
    loader.pad = 0
    x, _ = loader.batch(torch.arange(200))
    same = [torch.equal(x[i], images[i].float()) for i in range(200)]
    mirrored = [torch.equal(x[i], images[i].float().flip(2)) for i in range(200)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 50 < sum(mirrored) < 150


def test_without_augmentation_batches_are_the_normalised_images():
    images = torch.randint(0, 255, (10, 3, 8, 8), dtype=torch.uint8)
    data = ImageSet(images, torch.arange(10))
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    loader = DeviceLoader(data, mean, std, torch.device("cpu"), batch_size=4, channels_last=True)
    x, y = loader.batch(torch.tensor([7, 2]))
    expect = (images[[7, 2]].float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert torch.allclose(x, expect, atol=1e-5) and y.tolist() == [7, 2]
    assert x.is_contiguous(memory_format=torch.channels_last)
