"""Data sets for ``convscope probe``: image folders, CIFAR batches, synthetic sets, arrays.

``load_data(ref, shape)`` accepts

* ``synthetic:NAME[:key=value,...]`` — generated here (:mod:`convscope.probe.synthetic`);
* a CIFAR-10/100 "python version" directory (``data_batch_1..5`` + ``test_batch``, or ``train`` +
  ``test``).  Those files are pickles: they are read with an unpickler that only accepts the
  objects such a batch holds (dicts, lists, bytes and numpy arrays, at any pickle protocol) and
  refuses anything else; keys may be bytes (as in the published files) or str;
* an image folder: ``DIR/CLASS/**/*.png|jpg|…`` (searched recursively; split 80/20 per class,
  seeded), or ``DIR/train/CLASS/…`` with ``DIR/test/CLASS/…`` (or ``val``).  Paths with a component
  starting with '.' (hidden files and folders, macOS ``._x`` files) are skipped.  Every file's
  header is read when the folder is listed; files Pillow cannot open are skipped with a note.
  Reading images needs Pillow.

Images are resized to the network's input (bilinear, antialiased when shrinking, through
``torch.nn.functional.interpolate``), converted to its channel count (grey ↔ RGB), and normalised
per channel with the training split's mean and standard deviation.  Nothing is downloaded.
Folder images are decoded on demand and kept (as uint8 at the network's size) while that cache
stays under ``CACHE_BYTES``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from convscope.errors import InputError
from convscope.probe.results import DataInfo
from convscope.probe.synthetic import make_synthetic

__all__ = ["CACHE_BYTES", "IMAGE_SUFFIXES", "DataSet", "Split", "from_arrays", "load_data", "resize"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
CACHE_BYTES = 1 << 30
_TEST_DIRS = ("test", "val", "valid", "validation")
_NORM_SAMPLES = 1000
MIN_TRAIN = 2  # a training step needs two images (BatchNorm cannot train on one)


class Split:
    """One split: labels, and ``images(idx)`` -> float32 (B, C, H, W) before normalisation."""

    def __init__(self, labels: torch.Tensor):
        self.labels = labels.to(torch.int64)

    def __len__(self) -> int:
        return int(self.labels.numel())

    def images(self, idx: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class TensorSplit(Split):
    def __init__(self, x: torch.Tensor, labels: torch.Tensor, scale: float = 1.0):
        super().__init__(labels)
        self.x = x  # float32, or uint8 with scale 1/255
        self.scale = scale

    def images(self, idx: torch.Tensor) -> torch.Tensor:
        return self.x[idx].to(torch.float32) * self.scale


class FileSplit(Split):
    """Image files decoded on demand (Pillow), resized, cached as uint8 while the cache fits."""

    def __init__(self, files: Sequence[Path], labels: torch.Tensor, shape: tuple[int, int, int]):
        super().__init__(labels)
        self.files = list(files)
        self.shape = shape
        fits = len(self.files) * shape[0] * shape[1] * shape[2] <= CACHE_BYTES
        self._cache: dict[int, torch.Tensor] | None = {} if fits else None

    def _decode(self, i: int) -> torch.Tensor:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        img = _read_image(self.files[i], self.shape[0])
        img = resize(img[None].float(), self.shape[1:])[0].round().clamp(0, 255).to(torch.uint8)
        if self._cache is not None:
            self._cache[i] = img
        return img

    def images(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._decode(int(i)) for i in idx]).to(torch.float32) / 255.0


@dataclass(frozen=True)
class DataSet:
    info: DataInfo
    train: Split
    test: Split
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fingerprint: str  # changes when the data changes (part of the checkpoint key)
    notes: tuple[str, ...] = ()

    def batch(self, split: Split, idx: torch.Tensor) -> torch.Tensor:
        """Normalised images of ``split`` at ``idx``."""
        x = split.images(idx)
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(N, C, h, w) float -> (N, C, H, W), bilinear; antialiased when shrinking."""
    h, w = int(size[0]), int(size[1])
    if tuple(x.shape[-2:]) == (h, w):
        return x
    shrink = x.shape[-2] > h or x.shape[-1] > w
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)


def _fit_channels(x: torch.Tensor, c: int, what: str) -> tuple[torch.Tensor, str | None]:
    """Grey -> RGB by repetition, RGB -> grey by luminance (ITU-R BT.601 weights)."""
    have = x.shape[1]
    if have == c:
        return x, None
    if have == 1:
        return x.expand(-1, c, -1, -1).contiguous(), f"{what}: grey images repeated to the network's {c} channels"
    if have == 3 and c == 1:
        wts = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
        return (x * wts).sum(1, keepdim=True), f"{what}: RGB images converted to grey for the network's 1 channel"
    raise InputError(f"{what}: images have {have} channels, the network takes {c}")


def _norm_stats(split: Split, seed: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split), generator=g)[:_NORM_SAMPLES]
    x = split.images(idx).to(torch.float64)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp(min=1e-6)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _finish(info: DataInfo, train: Split, test: Split, shape: tuple[int, int, int], fingerprint: str,
            notes: Sequence[str], seed: int) -> DataSet:
    if len(train) == 0 or len(test) == 0:
        raise InputError(f"--data {info.ref}: the {'training' if len(train) == 0 else 'test'} split is empty")
    if len(train) < MIN_TRAIN:
        raise InputError(f"--data {info.ref}: data set too small: {len(train)} training image(s), at least "
                         f"{MIN_TRAIN} needed")
    present = int(torch.unique(train.labels).numel())
    if present < 2:
        raise InputError(f"--data {info.ref}: the training split holds {present} class; need at least two classes")
    mean, std = _norm_stats(train, seed)
    return DataSet(info, train, test, shape, mean, std, fingerprint, tuple(notes))


def _as_images(x: np.ndarray, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x))
    if t.dim() == 3:
        t = t[:, None]
    if t.dim() != 4:
        raise InputError(f"{what}: expected images shaped (N, C, H, W) or (N, H, W), got {tuple(t.shape)}")
    return t.to(torch.float32)


def from_arrays(x_train: Any, y_train: Any, x_test: Any, y_test: Any, shape: Sequence[int], *,
                classes: Sequence[str] | None = None, name: str = "arrays", seed: int = 0) -> DataSet:
    """A data set from in-memory arrays (N, C, h, w) or (N, h, w) and integer labels; resized to
    ``shape`` (C, H, W).  Values are used as given (then normalised per channel)."""
    c, h, w = (int(v) for v in shape)
    notes: list[str] = []
    splits = []
    for x, y, part in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        t = _as_images(x, f"{name} ({part})")
        t, note = _fit_channels(t, c, name)
        if note and note not in notes:
            notes.append(note)
        lab = torch.as_tensor(np.asarray(y), dtype=torch.int64)
        if lab.numel() != t.shape[0]:
            raise InputError(f"{name} ({part}): {t.shape[0]} images but {lab.numel()} labels")
        splits.append(TensorSplit(torch.cat([resize(t[i:i + 4096], (h, w)) for i in range(0, len(t), 4096)]), lab))
    k = int(max(splits[0].labels.max(), splits[1].labels.max())) + 1
    names = tuple(classes) if classes is not None else tuple(str(i) for i in range(k))
    if len(names) < k or min(int(splits[0].labels.min()), int(splits[1].labels.min())) < 0:
        raise InputError(f"{name}: labels must be 0..{len(names) - 1}")
    digest = hashlib.sha256()
    for s in splits:
        digest.update(s.x.numpy().tobytes())
        digest.update(s.labels.numpy().tobytes())
    info = DataInfo(name, "arrays", names, len(splits[0]), len(splits[1]))
    return _finish(info, splits[0], splits[1], (c, h, w), digest.hexdigest(), notes, seed)


# -- synthetic ------------------------------------------------------------------------------------
def _load_synthetic(ref: str, shape: tuple[int, int, int], seed: int) -> DataSet:
    s = make_synthetic(ref, shape)
    train = TensorSplit(torch.from_numpy(s.x_train), torch.from_numpy(s.y_train))
    test = TensorSplit(torch.from_numpy(s.x_test), torch.from_numpy(s.y_test))
    params = ",".join(f"{k}={v}" for k, v in s.params)
    info = DataInfo(f"synthetic:{s.name}:{params}", "synthetic", s.classes, len(train), len(test), s.context_px)
    fp = hashlib.sha256(f"{info.ref}|{shape}".encode()).hexdigest()
    return _finish(info, train, test, shape, fp, (f"synthetic:{s.name}: {s.description}",), seed)


# -- CIFAR batches ----------------------------------------------------------------------------------
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    # protocol 5 (pickle.HIGHEST_PROTOCOL): an array is rebuilt from its bytes (frombuffer + reshape)
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol 2 (text -> bytes; runs no code)
}


class _BatchUnpickler(pickle.Unpickler):
    """Only the objects a CIFAR batch holds; everything else is refused (no code runs)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR batch")
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core"):]
        return super().find_class(module, name)


_MAX_LABEL = 255  # CIFAR labels are class indices (one byte in the binary version of the format)


def _get(d: dict[Any, Any], *keys: str) -> Any:
    """The first of ``keys`` in a batch dict, as bytes (Python 2 pickles) or str (Python 3 ones)."""
    for k in keys:
        for key in (k.encode(), k):
            if key in d:
                return d[key]
    return None


def _labels(raw: Any, path: Path) -> np.ndarray | None:
    """The labels as int64, None when there are none; refuses anything but class indices 0.._MAX_LABEL."""
    if raw is None:
        return None
    what = f"{path}: labels must be a list of integer class indices 0..{_MAX_LABEL}"
    if not isinstance(raw, (list, tuple, np.ndarray)) or (isinstance(raw, np.ndarray) and raw.ndim != 1):
        found = f"an array of shape {raw.shape}" if isinstance(raw, np.ndarray) else f"{type(raw).__name__} {raw!r:.40}"
        raise InputError(f"{what}, found {found}")
    bad = next((v for v in raw if isinstance(v, bool) or not isinstance(v, (int, np.integer))
                or not 0 <= v <= _MAX_LABEL), None)
    if bad is not None:
        raise InputError(f"{what}, found {(bad.item() if isinstance(bad, np.generic) else bad)!r}")
    return np.asarray(raw, dtype=np.int64)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _BatchUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, ModuleNotFoundError) as exc:
        raise InputError(f"{path}: not a readable CIFAR batch ({exc})") from None
    if not isinstance(d, dict) or _get(d, "data") is None:
        raise InputError(f"{path}: not a CIFAR batch (expected a dict with 'data' and 'labels')")
    labels = _labels(_get(d, "labels", "fine_labels"), path)
    data = np.asarray(_get(d, "data"))
    if labels is None or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != data.shape[0]:
        raise InputError(f"{path}: not a CIFAR batch (data {data.shape}, labels "
                         f"{None if labels is None else len(labels)}; expected N×3072 and N labels)")
    return data.reshape(-1, 3, 32, 32).astype(np.uint8), labels


def _cifar_files(root: Path) -> tuple[list[Path], list[Path]] | None:
    """The training and test batches of a CIFAR directory; None when ``root`` holds no CIFAR batch."""
    train = sorted(p for p in root.glob("data_batch_*") if p.is_file())
    if train and (root / "test_batch").is_file():
        return train, [root / "test_batch"]
    if (root / "train").is_file() and (root / "test").is_file():
        return [root / "train"], [root / "test"]
    if train or (root / "train").is_file():
        have, need = ("data_batch_*", "test_batch") if train else ("train", "test")
        raise InputError(f"--data {root}: a CIFAR batch directory with training batches ({have}) but no test "
                         f"batch: {root / need} is missing")
    if (root / "test_batch").is_file():
        raise InputError(f"--data {root}: a CIFAR batch directory with test_batch but no training batches "
                         "(data_batch_1..5)")
    return None


def _cifar_names(root: Path, k: int) -> tuple[str, ...]:
    for meta, key in (("batches.meta", "label_names"), ("meta", "fine_label_names")):
        p = root / meta
        if p.is_file():
            try:
                with open(p, "rb") as f:
                    d = _BatchUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in _get(d, key)]
                if len(names) >= k:
                    return tuple(names)
            except (InputError, OSError, pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError,
                    AttributeError):  # the names are decoration; fall back to numbers
                break
    return tuple(str(i) for i in range(k))


def _load_cifar(root: Path, ref: str, shape: tuple[int, int, int], seed: int,
                files: tuple[list[Path], list[Path]]) -> DataSet:
    notes = [f"{ref}: CIFAR batches read with a restricted unpickler (arrays and labels only)"]
    numbers = sorted(int(p.name.rsplit("_", 1)[1]) for p in files[0] if p.name.rsplit("_", 1)[-1].isdigit())
    if numbers and numbers != list(range(1, numbers[-1] + 1)):
        missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
        notes.append(f"{ref}: training batches {', '.join(f'data_batch_{i}' for i in numbers)} read; "
                     f"{', '.join(f'data_batch_{i}' for i in missing)} missing (a partial copy?)")
    splits = []
    for part in files:
        xs, ys = zip(*(_read_batch(p) for p in part))
        x = torch.from_numpy(np.concatenate(xs)).to(torch.float32)
        x, note = _fit_channels(x, shape[0], ref)
        if note and note not in notes:  # one note for both splits
            notes.append(note)
        x = torch.cat([resize(x[i:i + 2048], shape[1:]).round().clamp(0, 255).to(torch.uint8)
                       for i in range(0, len(x), 2048)])
        splits.append(TensorSplit(x, torch.from_numpy(np.concatenate(ys)), scale=1.0 / 255.0))
    if tuple(shape[1:]) != (32, 32):
        notes.append(f"{ref}: 32x32 images resized to {shape[1]}x{shape[2]}")
    k = int(max(int(s.labels.max()) for s in splits)) + 1
    info = DataInfo(ref, "cifar", _cifar_names(root, k), len(splits[0]), len(splits[1]))
    return _finish(info, splits[0], splits[1], shape, _fingerprint(root, files[0] + files[1], shape), notes, seed)


def _fingerprint(root: Path, files: Sequence[Path], shape: tuple[int, ...]) -> str:
    h = hashlib.sha256(f"{root.resolve()}|{shape}".encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


# -- image folders --------------------------------------------------------------------------------
_GREY_MODES = ("1", "L", "LA", "La", "F")  # and every integer mode ("I", "I;16", "I;16B", …)
_SHOW_SKIPPED = 3  # unreadable files named in the note


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise InputError("reading an image folder needs Pillow: pip install 'convscope[probe]'") from None
    return Image


def _image_errors(image: Any) -> tuple[type[BaseException], ...]:
    """What Pillow raises for a file it cannot open or decode (plugins raise more than OSError)."""
    return (OSError, ValueError, SyntaxError, EOFError, struct.error, image.DecompressionBombError)


def _is_grey(mode: str) -> bool:
    return mode in _GREY_MODES or mode.startswith("I")


def _to_8bit(im: Any, image: Any) -> Any:
    """An image of more than 8 bits per value as 8-bit grey ('L'): 32-bit float (mode F) values in
    [0, 1] scaled to 0..255, other float values clipped to 0..255; 16/32-bit integers (modes I,
    I;16…) scaled from 0..65535 to 0..255 (beyond: clipped).  convert() would clip instead of scale,
    or turn a float image black."""
    if im.mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if a.size and a.min() >= 0.0 and a.max() <= 1.0:
            a = a * 255.0
        return image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8), "L")
    if im.mode.startswith("I"):
        a = np.asarray(im, dtype=np.float64)
        return image.fromarray((np.clip(a, 0, 65535) / 257.0).round().astype(np.uint8), "L")
    return im


def _read_image(path: Path, channels: int) -> torch.Tensor:
    image = _pil()
    try:
        with image.open(path) as im:
            arr = np.asarray(_to_8bit(im, image).convert("L" if channels == 1 else "RGB"))
    except _image_errors(image) as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from None
    t = torch.from_numpy(arr.copy())
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1)


def _hidden(name: str) -> bool:
    return name.startswith(".")  # hidden files and folders; "._x.jpg": macOS AppleDouble metadata


def _image_files(d: Path, unreadable: list[tuple[Path, str]]) -> list[Path]:
    """Image files under ``d`` at any depth, sorted; paths with a hidden component are skipped.
    Sub-folders that cannot be listed are added to ``unreadable``."""
    out: list[Path] = []

    def failed(exc: OSError) -> None:
        unreadable.append((Path(exc.filename or d), exc.strerror or str(exc)))

    for top, dirs, files in os.walk(d, onerror=failed):
        dirs[:] = [x for x in dirs if not _hidden(x)]
        out += [Path(top) / f for f in files if not _hidden(f) and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(p for p in out if p.is_file() or not p.exists())  # a broken link: reported as unreadable


def _class_dirs(d: Path) -> list[Path]:
    try:
        return sorted(p for p in d.iterdir() if p.is_dir() and not _hidden(p.name))
    except OSError as exc:
        raise InputError(f"{d}: cannot list the image folder ({exc.strerror or exc})") from None


def _class_files(d: Path, unreadable: list[tuple[Path, str]]) -> dict[str, list[Path]]:
    return {sub.name: _image_files(sub, unreadable) for sub in _class_dirs(d)}


def _why(exc: BaseException, path: Path) -> str:
    """Why a file cannot be opened, without repeating its path."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).replace(f" '{path}'", "").replace(str(path), "").strip() or type(exc).__name__


def _readable(by_class: dict[str, list[Path]], image: Any, unreadable: list[tuple[Path, str]],
              modes: dict[str, int], sizes: dict[tuple[int, int], int]) -> dict[str, list[Path]]:
    """The files whose header Pillow reads (no decoding: cheap); the others go to ``unreadable``.
    ``modes`` counts the readable files' Pillow modes, ``sizes`` their (height, width)."""
    errors = _image_errors(image)
    out: dict[str, list[Path]] = {}
    for name, files in by_class.items():
        keep = out[name] = []
        for f in files:
            try:
                with image.open(f) as im:
                    mode, size = str(im.mode), (int(im.size[1]), int(im.size[0]))
            except errors as exc:
                unreadable.append((f, _why(exc, f)))
                continue
            keep.append(f)
            modes[mode] = modes.get(mode, 0) + 1
            sizes[size] = sizes.get(size, 0) + 1
    return out


def _split_per_class(by_class: dict[str, list[Path]], seed: int, test_share: float = 0.2
                     ) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    rng = np.random.default_rng(seed)
    train, test = {}, {}
    for name, files in by_class.items():
        order = rng.permutation(len(files))
        n_test = round(len(files) * test_share) if len(files) > 1 else 0
        n_test = max(n_test, 1) if len(files) > 1 else 0
        test[name] = [files[i] for i in order[:n_test]]
        train[name] = [files[i] for i in order[n_test:]]
    return train, test


def _is_split_folder(d: Path) -> bool:
    """``DIR/train`` laid out as a split (class folders only), not a class called "train" (images)."""
    try:
        entries = [p for p in d.iterdir() if not _hidden(p.name)]
    except OSError:
        return False
    return any(p.is_dir() for p in entries) and not any(p.suffix.lower() in IMAGE_SUFFIXES for p in entries)


def _rel(p: Path, root: Path) -> str:
    try:
        return str(p.relative_to(root))
    except ValueError:
        return str(p)


def _folder_notes(ref: str, root: Path, shape: tuple[int, int, int], unreadable: Sequence[tuple[Path, str]],
                  modes: dict[str, int], sizes: dict[tuple[int, int], int]) -> list[str]:
    channels = shape[0]
    notes = []
    if unreadable:
        first = "; ".join(f"{_rel(p, root)} ({why})" for p, why in unreadable[:_SHOW_SKIPPED])
        more = f"; and {len(unreadable) - _SHOW_SKIPPED} more" if len(unreadable) > _SHOW_SKIPPED else ""
        notes.append(f"{ref}: skipped {len(unreadable)} unreadable file(s) (not an image Pillow can open): "
                     f"{first}{more}")
    total = sum(modes.values())
    grey = sum(n for m, n in modes.items() if _is_grey(m))
    if channels == 1 and total - grey:
        notes.append(f"{ref}: {total - grey} of {total} images are colour (or palette) images, converted to grey "
                     "for the network's 1 channel")
    if channels == 3 and grey:
        notes.append(f"{ref}: {grey} of {total} images are grey, repeated to the network's 3 channels")
    floats = modes.get("F", 0)
    if floats:
        notes.append(f"{ref}: {floats} image(s) of 32-bit floats: values in [0, 1] scaled to 0..255, others "
                     "clipped to 0..255")
    wide = sum(n for m, n in modes.items() if m.startswith("I"))
    if wide:
        notes.append(f"{ref}: {wide} image(s) of 16/32-bit integers scaled from 0..65535 to 0..255")
    alpha = sum(n for m, n in modes.items() if "A" in m or m.endswith("a"))
    if alpha:
        notes.append(f"{ref}: {alpha} image(s) with an alpha channel: the alpha is dropped (not composited)")
    other = {hw: n for hw, n in sizes.items() if hw != tuple(shape[1:])}
    if other:
        common = max(other, key=lambda hw: other[hw])
        kinds = f"{common[0]}x{common[1]}" + (f" and {len(other) - 1} other size(s)" if len(other) > 1 else "")
        notes.append(f"{ref}: {sum(other.values())} of {total} images ({kinds}) resized to {shape[1]}x{shape[2]}")
    return notes


def _load_folder(root: Path, ref: str, shape: tuple[int, int, int], seed: int) -> DataSet:
    if shape[0] not in (1, 3):
        raise InputError(f"--data {ref}: image folders give grey or RGB images; the network takes {shape[0]} channels")
    image = _pil()
    test_dir = next((root / t for t in _TEST_DIRS if (root / t).is_dir()), None)
    no_test = (f"--data {ref}: has {root / 'train'} but no test split (no {', '.join(_TEST_DIRS)} folder beside "
               "it); expected DIR/train/CLASS with DIR/test/CLASS, or DIR/CLASS")
    notes = []
    unreadable: list[tuple[Path, str]] = []
    modes: dict[str, int] = {}
    sizes: dict[tuple[int, int], int] = {}
    if (root / "train").is_dir() and test_dir is not None:
        train_by = _readable(_class_files(root / "train", unreadable), image, unreadable, modes, sizes)
        test_by = _readable(_class_files(test_dir, unreadable), image, unreadable, modes, sizes)
        extra = sorted(set(test_by) - set(train_by))
        if extra:
            raise InputError(f"{test_dir}: classes {', '.join(extra)} have no folder in {root / 'train'}")
    else:
        if (root / "train").is_dir() and _is_split_folder(root / "train"):
            raise InputError(no_test)  # else train/ would be one class holding all the others
        train_by, test_by = _split_per_class(_readable(_class_files(root, unreadable), image, unreadable, modes, sizes),
                                             seed)
        notes.append(f"{ref}: split 80/20 per class (seed {seed})")
    empty = [c for c, f in train_by.items() if not f]
    classes = [c for c, f in train_by.items() if f]
    if len(classes) < 2 and (root / "train").is_dir() and test_dir is None:
        raise InputError(no_test)
    if len(classes) < 2:
        skipped = f" ({len(unreadable)} unreadable file(s) skipped, e.g. {_rel(unreadable[0][0], root)})" \
            if unreadable else ""
        raise InputError(f"--data {ref}: found {len(classes)} class folder(s) with images{skipped}; expected at least "
                         f"two (DIR/CLASS/*.png|.jpg…, or DIR/train/CLASS and DIR/test/CLASS)")
    notes += _folder_notes(ref, root, shape, unreadable, modes, sizes)
    if empty:
        notes.append(f"{ref}: skipped class folders without readable images: {', '.join(empty)}")
    splits = []
    all_files: list[Path] = []
    for by in (train_by, test_by):
        files = [f for i, c in enumerate(classes) for f in by.get(c, [])]
        labels = torch.tensor([i for i, c in enumerate(classes) for _ in by.get(c, [])], dtype=torch.int64)
        splits.append(FileSplit(files, labels, shape))
        all_files += files
    info = DataInfo(ref, "folder", tuple(classes), len(splits[0]), len(splits[1]))
    return _finish(info, splits[0], splits[1], shape, _fingerprint(root, all_files, shape), notes, seed)


def load_data(ref: str | os.PathLike[str] | DataSet, shape: Sequence[int], *, seed: int = 0) -> DataSet:
    """The data set ``ref`` at the network's input ``shape`` (C, H, W).  See the module docstring."""
    if isinstance(ref, DataSet):
        if tuple(ref.shape) != tuple(shape):
            raise InputError(f"data set '{ref.info.ref}' is {ref.shape}, the network takes {tuple(shape)}")
        return ref
    c, h, w = (int(v) for v in shape)
    text = os.fspath(ref)
    if not text.strip():  # Path('') is the working directory: its whole tree would be scanned
        raise InputError("--data is empty: give an image folder (one folder per class), a CIFAR batch directory or "
                         "synthetic:NAME")
    if min(h, w) == 1 < max(h, w):  # images squeezed into one row would probe nothing the network sees
        raise InputError(f"--data {text}: probe's data sets are images (a folder per class, CIFAR batches, "
                         f"synthetic ones), and this network reads a {h}x{w} signal; signals have no data format "
                         "in probe yet")
    if text.startswith("synthetic:"):
        return _load_synthetic(text, (c, h, w), seed)
    root = Path(text).expanduser()
    if not root.exists():
        raise InputError(f"--data {text}: no such directory")
    if not root.is_dir():
        raise InputError(f"--data {text}: not a directory (give an image folder, a CIFAR batch directory "
                         "or synthetic:NAME)")
    files = _cifar_files(root)
    if files is not None:
        return _load_cifar(root, text, (c, h, w), seed, files)
    return _load_folder(root, text, (c, h, w), seed)
