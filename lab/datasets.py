"""Data sets held whole on the training device, with the paper's augmentation done by tensor ops.

Each set is loaded once into uint8 tensors (N, C, H, W); `DeviceLoader` cuts shuffled batches, pads by 4,
crops back at random offsets and flips, all as batched tensor operations on the device: no PIL, no per-image
Python and no worker processes in the training loop.
"""
from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .models import ConfigError
from .errors import DataError  # noqa: F401 (re-exported)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")




@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    size: int
    classes: int
    flip: bool           # horizontal flips are a sensible augmentation (not for digits)
    source: str          # where the data comes from, for messages and the docs


DATASETS = {
    "cifar10": DatasetInfo("cifar10", 3, 32, 10, True, "torchvision CIFAR10 (download)"),
    "cifar100": DatasetInfo("cifar100", 3, 32, 100, True, "torchvision CIFAR100 (download)"),
    "mnist": DatasetInfo("mnist", 1, 28, 10, False, "torchvision MNIST (download)"),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", 1, 28, 10, True, f"{DEBIAN_FASHION_MNIST} (Debian dataset-fashion-mnist) or torchvision FashionMNIST"
    ),
    "synthetic": DatasetInfo("synthetic", 3, 32, 10, True, "generated from a seed, no download"),
    # size and classes come from the run (image_size) and the folder (its class folders): see `make_splits`
    "imagefolder": DatasetInfo("imagefolder", 3, 224, 0, True,
                               "your images: PATH/train/CLASS/*.jpg and PATH/val/CLASS/*.jpg (image_folder or --data)"),
}
# Images in each official training set (before the validation hold-out): static facts, so a configuration can be
# checked (a batch larger than the training set) without loading the data. The synthetic set is generated at
# this size by `load_raw`.
TRAIN_IMAGES = {"cifar10": 50000, "cifar100": 50000, "mnist": 60000, "fashion-mnist": 60000, "synthetic": 10000}
SYNTHETIC_TEST_IMAGES = 2000
# Images in each test set (what a run's evaluations cost: `lab.runs.estimate.evaluation_macs`).
TEST_IMAGES = {"cifar10": 10000, "cifar100": 10000, "mnist": 10000, "fashion-mnist": 10000,
               "synthetic": SYNTHETIC_TEST_IMAGES}


def held_out(total: int, val_fraction: float) -> int:
    """Validation images held out of a training set of `total` (`make_splits`, and what a run's cost counts)."""
    return int(round(total * val_fraction))


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


@dataclass
class ImageSet:
    """Images as uint8 (N, C, H, W) and int64 labels, on the CPU until moved."""

    images: torch.Tensor
    labels: torch.Tensor
    crop: int = 0        # batches are squares of this side cut out of the stored images (0: the whole image)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index], self.crop)


# How inputs are normalised (RunConfig.normalize): "channel" subtracts the training split's per-channel mean and
# divides by its per-channel std (the common practice); "pixel-mean" subtracts the training split's mean image,
# pixel by pixel and channel by channel, and does not rescale (He et al. 2015, section 4.2: "the per-pixel mean
# subtracted"), in [0, 1] units.
NORMALIZATIONS = ("channel", "pixel-mean")


@dataclass
class Splits:
    train: ImageSet
    val: ImageSet
    test: ImageSet
    mean: torch.Tensor   # in [0, 1] units, from the training split: per channel (C,), or the mean image (C, H, W)
    std: torch.Tensor    # per channel (C,); ones for "pixel-mean"
    info: DatasetInfo
    normalize: str = "channel"

    def normalisation(self) -> dict:
        """A compact record of the normalisation (a run's environment): the kind, and the per-channel mean
        (of the mean image, for "pixel-mean") and std."""
        mean = self.mean if self.mean.dim() == 1 else self.mean.mean(dim=(1, 2))
        return {"kind": self.normalize, "mean": mean.tolist(), "std": self.std.tolist()}


def default_data_dir() -> Path:
    return Path(os.environ.get("LAB_DATA", "data"))


# ----------------------------------------------------------------------------------------------------------
# Loading


CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def _download(name: str, root: Path) -> None:
    """Fetch `name` into `root` with torchvision (which verifies the files' checksums)."""
    import torchvision.datasets as tvd

    cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST}[name]
    for train in (True, False):
        cls(str(root), train=train, download=True)


def _numpy_reconstructors() -> dict[tuple[str, str], object]:
    """The callables a CIFAR batch's pickle may name: numpy's array and scalar rebuilders, under the module
    names numpy 1 and 2 pickle them with (the official files are Python 2 pickles of numpy 1 arrays)."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1
        from numpy.core import multiarray, numeric

    def latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
        # Python 3 pickles bytes for protocol 2 as _codecs.encode(text, "latin1"): admit that and nothing else
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise pickle.UnpicklingError("_codecs.encode with other arguments than a string and latin1")
        return text.encode("latin1")

    named = {"_reconstruct": multiarray._reconstruct, "scalar": multiarray.scalar,
             "_frombuffer": getattr(numeric, "_frombuffer", None)}
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                              ("_codecs", "encode"): latin1_encode}
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = named["_reconstruct"]
        allowed[(f"{prefix}.multiarray", "scalar")] = named["scalar"]
        if named["_frombuffer"] is not None:
            allowed[(f"{prefix}.numeric", "_frombuffer")] = named["_frombuffer"]
    return allowed


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, numbers, strings, bytes, lists and dicts only.

    A data folder may be shared: a planted batch file whose pickle names any other callable (os.system, a
    class with a __reduce__) is refused before anything is called, so reading it runs no code.
    """

    def find_class(self, module: str, name: str):  # noqa: ANN201 (pickle's signature)
        found = _numpy_reconstructors().get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never holds")
        return found


def read_cifar(folder: Path, name: str) -> tuple[ImageSet, ImageSet] | None:
    """Read torchvision's on-disk CIFAR layout (python pickles of uint8 rows); None when it is not there."""
    if name == "cifar10":
        train_files = [folder / f"data_batch_{i}" for i in range(1, 6)]
        test_files, key = [folder / "test_batch"], "labels"
    else:
        train_files, test_files, key = [folder / "train"], [folder / "test"], "fine_labels"
    if not all(f.exists() for f in train_files + test_files):
        return None

    def read(files: list[Path]) -> ImageSet:
        images, labels = [], []
        for f in files:
            with open(f, "rb") as fh:
                try:
                    # the official files are Python 2 pickles: latin1 turns their keys into str, as torchvision does
                    entry = _DataOnlyUnpickler(fh, encoding="latin1").load()
                    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
                    data, lab = entry["data"], entry[key]
                except Exception as exc:
                    raise DataError(f"{f} is not a CIFAR batch file ({type(exc).__name__}: {exc})") from None
            images.append(torch.as_tensor(np.asarray(data, dtype=np.uint8)).reshape(-1, 3, 32, 32))
            labels.append(torch.as_tensor(np.asarray(lab), dtype=torch.int64))
        return ImageSet(torch.cat(images).contiguous(), torch.cat(labels))

    return read(train_files), read(test_files)


def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file (MNIST's format), gzipped or not, into a uint8 tensor."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = offset + (torch.Size(shape).numel())
    if len(raw) != expected:
        raise DataError(f"{path} is truncated or corrupt: {len(raw)} bytes, expected {expected}")
    return torch.frombuffer(bytearray(raw[offset:]), dtype=torch.uint8).reshape(shape)


def _idx_pair(folder: Path, prefix: str) -> ImageSet | None:
    for suffix in ("", ".gz"):
        img, lab = folder / f"{prefix}-images-idx3-ubyte{suffix}", folder / f"{prefix}-labels-idx1-ubyte{suffix}"
        if img.exists() and lab.exists():
            images, labels = read_idx(img), read_idx(lab)
            if len(images) != len(labels):
                raise DataError(f"{img} has {len(images)} images but {lab} has {len(labels)} labels")
            return ImageSet(images.unsqueeze(1).contiguous(), labels.to(torch.int64))
    return None


@lru_cache(maxsize=4)
def synthetic_set(n: int, seed: int, classes: int = 10, size: int = 32) -> ImageSet:
    """A procedurally generated 10-class image set, the same for the same seed.

    Each class is a fixed mixture of oriented colour gratings; an image is its class's pattern at a random
    phase and position, blended with another class's pattern and noise. Learnable, but deep nets need many
    steps to separate the classes, so depth and shortcuts matter.
    """
    g = torch.Generator().manual_seed(1234)  # class patterns are fixed across seeds
    freq = torch.rand(classes, 3, generator=g) * 0.5 + 0.15
    angle = torch.rand(classes, 3, generator=g) * torch.pi
    colour = torch.rand(classes, 3, 3, generator=g)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    distractor = (labels + torch.randint(1, classes, (n,), generator=g)) % classes
    coords = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")

    def pattern(cls: torch.Tensor) -> torch.Tensor:
        shift = torch.rand(len(cls), 2, 1, 1, generator=g) * size
        phase = torch.rand(len(cls), 3, 1, 1, generator=g) * 2 * torch.pi
        a = angle[cls][:, :, None, None]
        u = (xx + shift[:, :1]) * torch.cos(a) + (yy + shift[:, 1:]) * torch.sin(a)
        waves = torch.sin(u * freq[cls][:, :, None, None] + phase)  # (n, 3 waves, H, W)
        return torch.einsum("nwhx,nwc->nchx", waves, colour[cls]) / 3

    img = pattern(labels) + 0.6 * pattern(distractor) + 0.35 * torch.randn(n, 3, size, size, generator=g)
    img = ((img + 1.5) / 3).clamp(0, 1)
    return ImageSet((img * 255).round().to(torch.uint8), labels.to(torch.int64))


def local_folders(name: str, root: Path) -> list[Path]:
    """Where the lab looks for a data set's files, in order."""
    return {
        "cifar10": [root / CIFAR_FOLDERS["cifar10"]],
        "cifar100": [root / CIFAR_FOLDERS["cifar100"]],
        "mnist": [root / "MNIST" / "raw"],
        "fashion-mnist": [root / "FashionMNIST" / "raw", root / "fashion-mnist", DEBIAN_FASHION_MNIST],
        "synthetic": [],
    }[name]


def find_local(name: str, data_dir: Path | str | None = None) -> Path | None:
    """The folder holding `name`'s files without downloading (cheap: checks file names only); None if absent.
    The synthetic set needs no files and reports the data folder."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if dataset_info(name).name == "synthetic":
        return root
    if name == "imagefolder":  # the data folder itself, in the ImageFolder layout
        return root if (root / "train").is_dir() and (root / "val").is_dir() else None
    for folder in local_folders(name, root):
        if name in CIFAR_FOLDERS:
            needed = ["test_batch", "data_batch_1"] if name == "cifar10" else ["train", "test"]
        else:
            needed = ["train-images-idx3-ubyte", "t10k-images-idx3-ubyte"]
        if all((folder / f).exists() or (folder / f"{f}.gz").exists() for f in needed):
            return folder
    return None


def load_raw(name: str, data_dir: Path | str | None = None, download: bool = True) -> tuple[ImageSet, ImageSet]:
    """The official training and test sets of `name` as uint8 ImageSets.

    Looks in `data_dir` (default: $LAB_DATA or data/) for torchvision's on-disk layout and reads the files
    directly; Fashion-MNIST is also taken from Debian's dataset-fashion-mnist files. Missing data is downloaded when `download` is true; when that
    fails too, DataError says where the lab looked and how to get the files.
    """
    info = dataset_info(name)
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if name == "synthetic":
        return synthetic_set(TRAIN_IMAGES["synthetic"], seed=1), synthetic_set(SYNTHETIC_TEST_IMAGES, seed=2)
    folders = local_folders(name, root)

    def local() -> tuple[ImageSet, ImageSet] | None:
        for folder in folders:
            found = read_cifar(folder, name) if name in CIFAR_FOLDERS else _idx_pair_both(folder)
            if found is not None:
                return found
        return None

    found = local()
    if found is not None:
        return found
    looked = [str(f) for f in folders]
    if not download:
        raise DataError(_missing_message(info, looked, "downloads are off"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        _download(name, root)
    except Exception as exc:  # network errors come in many types (URLError, socket errors, HTTP errors)
        raise DataError(_missing_message(info, looked, f"the download failed ({type(exc).__name__}: {exc})")) from None
    found = local()
    if found is None:
        raise DataError(_missing_message(info, looked, "the download did not produce the expected files"))
    return found


def _idx_pair_both(folder: Path) -> tuple[ImageSet, ImageSet] | None:
    train, test = _idx_pair(folder, "train"), _idx_pair(folder, "t10k")
    return (train, test) if train is not None and test is not None else None


def _missing_message(info: DatasetInfo, looked: list[str], why: str) -> str:
    hint = {
        "fashion-mnist": "install Debian's package (apt-get install dataset-fashion-mnist), or ",
    }.get(info.name, "")
    return (
        f"data set {info.name!r} not found (looked in: {', '.join(looked)}) and {why}. "
        f"To get it: {hint}run once with network access so torchvision can download it into the data folder "
        f"(--data DIR or LAB_DATA), or copy torchvision's files there. "
        f"Offline, try --dataset synthetic."
    )


def make_splits(
    name: str,
    data_dir: Path | str | None = None,
    val_fraction: float = 0.1,
    download: bool = True,
    split_seed: int = 0,
    limit: int = 0,
    normalize: str = "channel",
    image_size: int = 0,
    image_folder: Path | str | None = None,
) -> Splits:
    """Training / validation / test splits (the paper's 45k/5k CIFAR split is val_fraction=0.1).

    The validation images are a fixed random tenth of the official training set (fixed by `split_seed`, the
    same for every run so runs are comparable); `limit` > 0 keeps only that many training images (tests).
    Mean and std come from the training split, in [0, 1] units, as `normalize` says (see NORMALIZATIONS).
    An image folder ("imagefolder") is read from `image_folder` (default: `data_dir`) at `image_size` pixels
    (0: 224); its val/ folder is the test set, as ImageNet's validation set is the paper's.
    """
    if normalize not in NORMALIZATIONS:
        raise ConfigError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    info = dataset_info(name)
    if name == "imagefolder":
        train_full, test, info = load_image_folder(image_folder or data_dir or default_data_dir(), image_size)
    else:
        train_full, test = load_raw(name, data_dir, download)
    perm = torch.randperm(len(train_full), generator=torch.Generator().manual_seed(split_seed))
    n_val = held_out(len(train_full), val_fraction)
    val, train = train_full.subset(perm[:n_val]), train_full.subset(perm[n_val:])
    if limit:
        train = train.subset(torch.arange(min(limit, len(train))))
    if train.crop:
        mean, std = _chunked_moments(train.images, normalize)
        return Splits(train, val, test, mean, std, info, normalize)
    x = train.images.float().div_(255)
    if normalize == "pixel-mean":
        mean, std = x.mean(dim=0), torch.ones(x.shape[1])
    else:
        mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return Splits(train, val, test, mean, std, info, normalize)


def _chunked_moments(images: torch.Tensor, normalize: str, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split's mean (per channel, or the mean image) and per-channel std, in [0, 1] units, a chunk
    of images at a time: an image folder's images in float would need 4x their (large) uint8 size."""
    n = len(images)
    total = torch.zeros(images.shape[1:], dtype=torch.float64)
    square = torch.zeros(images.shape[1], dtype=torch.float64)
    for start in range(0, n, chunk):
        x = images[start:start + chunk].double().div_(255)
        total += x.sum(dim=0)
        square += x.square().sum(dim=(0, 2, 3))
    mean_image = total / n
    pixels = n * images.shape[2] * images.shape[3]
    channel_mean = mean_image.mean(dim=(1, 2))
    var = (square / pixels - channel_mean.square()).clamp_min(0) * pixels / max(1, pixels - 1)
    if normalize == "pixel-mean":
        return mean_image.float(), torch.ones(images.shape[1])
    return channel_mean.float(), var.sqrt().float().clamp_min(1e-3)


def write_synthetic_folder(root: Path) -> None:
    """Write the generated image folder (`lab.imagefolder.synthetic_folder`): the synthetic set as PNG files."""
    from PIL import Image

    tmp = root.with_name(f"{root.name}.{os.getpid()}.part")
    for split, n, seed in (("train", 300, 11), ("val", 100, 12)):
        images = synthetic_set(n, seed)
        for i, (image, label) in enumerate(zip(images.images, images.labels.tolist())):
            folder = tmp / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")
    try:
        os.replace(tmp, root)
    except OSError:  # another process wrote it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def load_image_folder(folder: Path | str, image_size: int = 0) -> tuple[ImageSet, ImageSet, DatasetInfo]:
    """An image folder's training and test sets (train/ and val/), decoded once into the cache
    (`lab.imagefolder`), with the data set's facts: its classes, and `image_size` as the size the net sees."""
    from .imagefolder import DEFAULT_IMAGE_SIZE, is_synthetic, load

    folder = Path(folder).expanduser()
    if is_synthetic(folder) and not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_synthetic_folder(folder)
    size = image_size or DEFAULT_IMAGE_SIZE
    classes, sets = load(folder, size)

    def image_set(split: str) -> ImageSet:
        images, labels = sets[split]
        return ImageSet(torch.from_numpy(np.array(images)), torch.from_numpy(labels), crop=size)

    info = replace(DATASETS["imagefolder"], size=size, classes=len(classes))
    return image_set("train"), image_set("val"), info


# ----------------------------------------------------------------------------------------------------------
# Batches on the device


class DeviceLoader:
    """Batches of normalised float images cut from a uint8 set held on `device` ((x - mean) / std in [0, 1] units).

    `batch(index)` returns (x, y) for the images at `index` (a device tensor); with
    `augment` each batch is padded by `pad`, cropped back at random offsets and (if `flip`) flipped at random.
    """

    def __init__(
        self,
        data: ImageSet,
        mean: torch.Tensor,
        std: torch.Tensor,
        device: torch.device,
        batch_size: int,
        augment: bool = False,
        flip: bool = True,
        pad: int = 4,
        channels_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.crop = data.crop
        # a per-channel mean (C,) or a mean image (C, H, W) ("pixel-mean"); std per channel
        self.mean = (mean.to(device).view(1, -1, 1, 1) if mean.dim() == 1 else mean.to(device).unsqueeze(0)) * 255
        self.inv_std = 1 / (std.to(device).view(1, -1, 1, 1) * 255)
        self.device, self.batch_size = device, batch_size
        self.augment, self.flip, self.pad = augment, flip, pad
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.generator = generator

    def __len__(self) -> int:
        return len(self.labels)

    def batches_per_epoch(self) -> int:
        return max(1, len(self) // self.batch_size)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean) * self.inv_std

    def _windows(self, x: torch.Tensor, h: int, w: int, slack: int) -> torch.Tensor:
        """An h x w window of each image, each at its own random offset from 0 to `slack` down and across."""
        b = x.shape[0]
        off = torch.randint(0, slack + 1, (2, b), device=x.device, generator=self.generator)
        rows = (off[0].view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1)
        cols = (off[1].view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w)
        return x[torch.arange(b, device=x.device).view(b, 1, 1, 1), torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1), rows, cols]

    def _flips(self, x: torch.Tensor) -> torch.Tensor:
        """Each image flipped left-right with probability 1/2 (when the data set allows flips)."""
        if not self.flip:
            return x
        mask = torch.rand(x.shape[0], device=x.device, generator=self.generator) < 0.5
        return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        p = self.pad
        if p:  # zeros = the mean pixel after normalisation, as in the paper
            x = self._windows(F.pad(x, (p, p, p, p)), h, w, 2 * p)
        return self._flips(x)

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        """A `crop`-sided square of each image: at a random place, flipped at random, when augmenting (the
        training batches); the centre otherwise (evaluation)."""
        _, _, h, w = x.shape
        c = self.crop
        if not self.augment:
            top, left = (h - c) // 2, (w - c) // 2
            return x[:, :, top:top + c, left:left + c]
        return self._flips(self._windows(x, c, c, h - c))  # the stored images are squares

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.normalise(self.images[index])
        if self.crop:
            x = self._crop(x)
        elif self.augment:
            x = self._augment(x)
        return x.contiguous(memory_format=self.memory_format), self.labels[index]
