"""Any folder of images in torchvision's ImageFolder layout (PATH/train/CLASS/*.jpg, PATH/val/CLASS/*.jpg, as
Imagenette and Imagewoof ship), decoded once into a uint8 cache and then served like the built-in sets.

Decoding JPEGs dominates an epoch on small nets, so every image is decoded once: its shorter side resized to
`stored_size(image_size)` (256 for 224, the paper's ratio), the centre square kept, and the result written to a
memory-mapped uint8 file under the per-user cache (~/.cache/lab/imagefolder, or $LAB_CACHE/imagefolder), keyed by
the folder's file list (names, sizes, modification times) and the size. Training cuts random `image_size`
squares out of the stored ones and flips them; evaluation takes the centre square (`lab.datasets.DeviceLoader`).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val")
DEFAULT_IMAGE_SIZE = 224


def stored_size(image_size: int) -> int:
    """The side of the stored squares: 256 / 224 of the crop, as the paper's 224 crops of 256 images."""
    return int(round(image_size * 256 / 224))


def cache_dir() -> Path:
    root = os.environ.get("LAB_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lab"
    return Path(root) / "imagefolder"


@dataclass(frozen=True)
class FolderIndex:
    """The classes and files of an image folder: `files[split]` is a list of (path, class index)."""

    root: Path
    classes: tuple[str, ...]
    files: dict

    def count(self, split: str) -> int:
        return len(self.files[split])

    def key(self, image_size: int) -> str:
        h = hashlib.sha256(f"{self.root.resolve()}|{image_size}|{','.join(self.classes)}".encode())
        for split in SPLITS:
            for path, label in self.files[split]:
                st = path.stat()
                h.update(f"{path.relative_to(self.root)}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:24]


SYNTHETIC = "synthetic-v1"  # the generated folder's name in the cache (a new version is a new folder)


def synthetic_folder() -> Path:
    """Where the generated image folder lives: the lab's synthetic set (`lab.datasets.synthetic_set`, 10 classes)
    written out as PNG files in the ImageFolder layout, 30 training and 10 validation images a class. The smoke
    budget of the imagenet-degradation study trains on it, so its tests need no images of their own."""
    return cache_dir() / SYNTHETIC


def is_synthetic(root: Path) -> bool:
    """Whether `root` names the generated folder (in any cache: $LAB_CACHE may differ between processes)."""
    return (root.name, root.parent.name) == (SYNTHETIC, "imagefolder")


def _classes(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan(root: Path | str) -> FolderIndex:
    """Check the layout and list the images; a bad folder is refused in one line that names it."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist (expected {root}/train/CLASS/... and {root}/val/CLASS/...)")
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        raise DataError(f"image folder {root} has no {' or '.join(missing)}/ folder (torchvision's ImageFolder "
                        f"layout: {root}/train/CLASS/*.jpg and {root}/val/CLASS/*.jpg)")
    train, val = _classes(root / "train"), _classes(root / "val")
    if train != val:
        only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
        raise DataError(f"image folder {root}: train/ and val/ have different classes (only in train: "
                        f"{', '.join(only_train[:5]) or '-'}; only in val: {', '.join(only_val[:5]) or '-'})")
    if len(train) < 2:
        raise DataError(f"image folder {root}: {len(train)} class folder(s) in train/; at least 2 are needed")
    files = {}
    for split in SPLITS:
        listed = []
        for label, name in enumerate(train):
            for path in sorted((root / split / name).rglob("*")):
                if path.suffix.lower() in EXTENSIONS and path.is_file():
                    listed.append((path, label))
        if not listed:
            raise DataError(f"image folder {root}/{split} holds no images ({', '.join(EXTENSIONS)})")
        files[split] = listed
    return FolderIndex(root, tuple(train), files)


def decode(path: Path, side: int) -> np.ndarray:
    """One image as a (3, side, side) uint8 array: RGB, shorter side resized to `side`, centre square."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = side / min(w, h)
            im = im.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.BILINEAR)
            w, h = im.size
            left, top = (w - side) // 2, (h - side) // 2
            im = im.crop((left, top, left + side, top + side))
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot read image {path} ({type(exc).__name__}: {exc})") from None


def _decode_split(index: FolderIndex, split: str, side: int, target: Path, progress) -> None:
    files = index.files[split]
    tmp = target.with_suffix(".part")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), 3, side, side))
    bar = progress(total=len(files), desc=f"decoding {index.root.name}/{split} at {side} px", unit="img")
    try:
        for i, (path, _) in enumerate(files):
            out[i] = decode(path, side)
            bar.update(1)
        out.flush()
    finally:
        bar.close()
        del out
    os.replace(tmp, target)


def load(root: Path | str, image_size: int = DEFAULT_IMAGE_SIZE, progress=None):
    """(classes, {"train": (images, labels), "val": (images, labels)}) with images a read-only memory-mapped
    (N, 3, S, S) uint8 array, S = stored_size(image_size), and labels int64. Decodes only what is not cached."""
    if not (isinstance(image_size, int) and 16 <= image_size <= 1024):
        raise DataError(f"image size {image_size!r} must be an integer from 16 to 1024 pixels")
    index = scan(root)
    side = stored_size(image_size)
    folder = cache_dir() / index.key(image_size)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if progress is None:
        from tqdm import tqdm as progress
    out = {}
    for split in SPLITS:
        target = folder / f"{split}.npy"
        if not target.exists():
            _decode_split(index, split, side, target, progress)
            (folder / "index.json").write_text(json.dumps({"root": str(index.root), "classes": list(index.classes),
                                                           "image_size": image_size}))
        images = np.load(target, mmap_mode="r")
        labels = np.asarray([label for _, label in index.files[split]], dtype=np.int64)
        if images.shape != (len(labels), 3, side, side):
            raise DataError(f"the decoded cache {target} does not match {index.root}; delete it and run again")
        out[split] = (images, labels)
    return index.classes, out
