"""Training on the user's own images (dataset imagefolder): the layout check, the decoded cache, crops, and a run
of an imagenet-family net end to end on a generated folder."""
import numpy as np
import pytest
import torch
from PIL import Image

from lab.config import make_config
from lab.datasets import DataError, DeviceLoader, make_splits
from lab.imagefolder import cache_dir, scan, stored_size
from lab.runs.execute import execute_run

CLASSES = ("apple", "boat", "cloud")


def write_folder(root, train=8, val=3, seed=0):
    """A small ImageFolder: every class a colour, images of assorted sizes and formats."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = rng.integers(40, 90, size=2)
                pixels = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
                pixels[..., c] += 150
                Image.fromarray(pixels).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "cache"))


def test_decoded_once_into_the_cache_then_read_from_it(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "images")
    splits = make_splits("imagefolder", image_folder=root, image_size=32, val_fraction=0.25)
    side = stored_size(32)
    assert splits.info.classes == 3 and splits.info.size == 32 and splits.info.channels == 3
    assert len(splits.train) + len(splits.val) == 24 and len(splits.test) == 9
    assert splits.train.images.shape[1:] == (3, side, side) and splits.train.images.dtype == torch.uint8
    assert sorted(splits.test.labels.tolist()) == [0] * 3 + [1] * 3 + [2] * 3
    # the class colour survives decoding: images of class c are brightest in channel c
    brightest = splits.test.images.float().mean(dim=(2, 3)).argmax(dim=1)
    assert torch.equal(brightest, splits.test.labels)
    cached = list((cache_dir()).glob("*/train.npy"))
    assert len(cached) == 1

    import lab.imagefolder as imagefolder

    def no_decoding(*_args, **_kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(imagefolder, "decode", no_decoding)
    again = make_splits("imagefolder", image_folder=root, image_size=32, val_fraction=0.25)
    assert torch.equal(again.test.images, splits.test.images)
    # a changed folder is a new cache entry
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(root / "val" / "boat" / "new.png")
    with pytest.raises(AssertionError, match="decoded again"):
        make_splits("imagefolder", image_folder=root, image_size=32, val_fraction=0.25)


def test_training_batches_are_random_crops_and_evaluation_the_centre(tmp_path):
    root = write_folder(tmp_path / "images")
    splits = make_splits("imagefolder", image_folder=root, image_size=32, val_fraction=0.25)
    gen = torch.Generator().manual_seed(0)
    train = DeviceLoader(splits.train, splits.mean, splits.std, torch.device("cpu"), 4, augment=True, generator=gen)
    test = DeviceLoader(splits.test, splits.mean, splits.std, torch.device("cpu"), 4)
    index = torch.arange(4)
    x, _ = train.batch(index)
    y, _ = test.batch(index)
    assert x.shape == y.shape == (4, 3, 32, 32)
    side = stored_size(32)
    top = (side - 32) // 2
    centre = test.normalise(splits.test.images[:4])[:, :, top:top + 32, top:top + 32]
    assert torch.equal(y, centre)
    x2, _ = train.batch(index)
    assert not torch.equal(x, x2)  # other places (and flips) each time


@pytest.mark.parametrize("make, message", [
    (lambda root: root, "does not exist"),
    (lambda root: (root / "train" / "a").mkdir(parents=True) or root, "has no val/ folder"),
    (lambda root: [(root / s / c).mkdir(parents=True) for s, c in (("train", "a"), ("train", "b"), ("val", "a"),
                                                                  ("val", "c"))] and root,
     "different classes \\(only in train: b; only in val: c\\)"),
    (lambda root: [(root / s / c).mkdir(parents=True) for s in ("train", "val") for c in "ab"] and root,
     "holds no images"),
])
def test_a_bad_folder_is_refused_in_one_line_naming_it(tmp_path, make, message):
    root = make(tmp_path / "images")
    with pytest.raises(DataError, match=message) as err:
        scan(root)
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


def test_an_unreadable_image_is_named(tmp_path):
    root = write_folder(tmp_path / "images")
    (root / "train" / "boat" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="cannot read image .*broken.jpg"):
        make_splits("imagefolder", image_folder=root, image_size=32)


def test_options_are_for_the_image_folder_and_epochs_set_iterations(tmp_path):
    root = write_folder(tmp_path / "images")
    cfg = make_config("smoke", dataset="imagefolder", image_folder=str(root), image_size=32, epochs=3,
                      batch_size=4, val_fraction=0.25, train_limit=0)
    assert cfg.iterations == 3 * 18 // 4 + 1  # ceil(3 epochs x 18 training images / 4)
    from lab.models import ConfigError

    with pytest.raises(ConfigError, match="image_size is for dataset imagefolder"):
        make_config("smoke", image_size=64)
    with pytest.raises(ConfigError, match="image_folder is for dataset imagefolder"):
        make_config("smoke", image_folder=str(root))
    with pytest.raises(ConfigError, match="image_size must be 0"):
        make_config("smoke", dataset="imagefolder", image_size=8)


def test_an_imagenet_family_net_trains_end_to_end_on_an_image_folder(tmp_path, store):
    root = write_folder(tmp_path / "images")
    cfg = make_config("smoke", family="imagenet", depth=18, shortcut="B", width=0.125, dataset="imagefolder",
                      image_folder=str(root), image_size=32, val_fraction=0.25, batch_size=6, train_limit=0,
                      probe_batch=6, eval_images=0)
    (rid,) = store.create_runs([cfg], status="running")
    assert execute_run(store, rid, handle_signals=False) == "done"
    run = store.get_run(rid)
    assert run["status"] == "done" and run["iteration"] == cfg.iterations
    assert 0 <= run["final_train_error"] <= 1 and 0 <= run["final_test_error"] <= 1
    names = set(store.scalars(rid)["name"])
    assert {"train_loss", "train_error", "val_error", "test_error"} <= names
    assert store.layer_series(rid, "residual_ratio")["layer"].nunique() == 8  # 2+2+2+2 units
