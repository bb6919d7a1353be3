"""Data sets for `convscope probe`: synthetic sets, image folders, CIFAR batches, arrays, errors."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from convscope.backends.data import from_arrays, load_data
from convscope.errors import InputError
from convscope.probe.synthetic import make_synthetic

PIL = pytest.importorskip("PIL.Image")


# -- synthetic:scales ----------------------------------------------------------------------------------
def test_scales_is_seeded_and_shaped() -> None:
    a = make_synthetic("synthetic:scales:n=50,test=20", (3, 16, 16))
    b = make_synthetic("synthetic:scales:n=50,test=20", (3, 16, 16))
    c = make_synthetic("synthetic:scales:n=50,test=20,seed=1", (3, 16, 16))
    assert a.x_train.shape == (50, 3, 16, 16) and a.x_test.shape == (20, 3, 16, 16)
    assert np.array_equal(a.x_train, b.x_train) and not np.array_equal(a.x_train, c.x_train)
    assert a.context_px == 5 and dict(a.params)["d"] == 4  # default d = a quarter of the side
    assert np.array_equal(a.x_train[:, 0], a.x_train[:, 2])  # grey, repeated over channels


@pytest.mark.parametrize("side,d", [(16, 4), (16, 8), (24, 3), (20, 5)])
def test_scales_every_class_has_the_same_marks_at_offset_d(side: int, d: int) -> None:
    s = make_synthetic(f"synthetic:scales:d={d},n=300,test=1,noise=0", (1, side, side))
    per_cell = 2 * (side // (2 * d)) ** 2
    for img, y in zip(s.x_train[:, 0], s.y_train):
        marks = np.argwhere(img > 0)
        assert len(marks) == per_cell  # the same count in every class: a count tells nothing
        oy, ox = {0: (0, d), 1: (d, 0), 2: (d, d)}[int(y)]
        pos = {tuple(m) for m in marks}
        # every mark has its partner at the class's offset (up to the lattice period, on a torus)
        for r, c in pos:
            partner = any(((r + sy * oy) % side, (c + sx * ox) % side) in pos
                          for sy in (-1, 1) for sx in (-1, 1))
            assert partner, (y, r, c)


def test_scales_marks_are_uniform_in_every_class() -> None:
    """The design's guarantee: single-mark evidence has the same mean in every class, so a linear
    probe on features that see one mark at a time is at chance."""
    s = make_synthetic("synthetic:scales:d=4,n=6000,test=1,noise=0", (1, 16, 16))
    mass = (s.x_train[:, 0] > 0).astype(np.float64)
    means = [mass[s.y_train == k].mean(0) for k in range(3)]
    expected = 2 * (16 // 8) ** 2 / 256  # marks per pixel
    for m in means:
        # each pixel's mark frequency is the same in every class (binomial noise only)
        assert abs(m.mean() - expected) < 1e-9
        assert np.abs(m - expected).max() < 0.06


@pytest.mark.parametrize("ref,msg", [
    ("synthetic:nope", "unknown synthetic data set 'nope'"),
    ("synthetic:scales:k=3", "bad parameter 'k=3'"),
    ("synthetic:scales:d=9", "d=9 must be between 1 and half the image side"),
    ("synthetic:scales:n=abc", "n must be an integer, got 'abc'"),
    ("synthetic:scales:d=2.5", "d must be an integer, got '2.5'"),
    ("synthetic:scales:noise=x", "noise must be a number, got 'x'"),
    ("synthetic:scales:seed=-1", r"seed=-1 is out of range: 0 <= seed < 2\*\*32"),
    ("synthetic:scales:seed=4294967296", r"seed=4294967296 is out of range"),
    ("synthetic:scales:n=99999999999", r"n=99999999999 images of 1x16x16 would take 95,367.4 GiB; the limit is "
                                       r"4 GiB per split \(n <= 4194304 at this size\)"),
    ("synthetic:scales:test=4194305", r"test=4194305 images .* \(test <= 4194304 at this size\)"),
    ("synthetic:scales:noise=nan", "noise a finite number >= 0, got n=2000, test=1000, noise=nan"),
    ("synthetic:scales:noise=inf", "noise a finite number >= 0, got .*noise=inf"),
    ("synthetic:scales:d=4,d=5", r"'d' is given twice \(d=4 and d=5\)"),
])
def test_synthetic_errors(ref: str, msg: str) -> None:
    with pytest.raises(InputError, match=msg):
        make_synthetic(ref, (1, 16, 16))


def test_synthetic_size_limit_counts_the_default_too() -> None:
    """A huge input makes even the default n too large: refused before anything is allocated."""
    with pytest.raises(InputError, match=r"n=2000 \(the default\) images of 3x1024x1024 .* \(n <= 341 at this size\)"):
        make_synthetic("synthetic:scales", (3, 1024, 1024))
    top = make_synthetic("synthetic:scales:n=2,test=1,seed=4294967295", (1, 8, 8))  # the largest seed is fine
    assert dict(top.params)["seed"] == 2**32 - 1


def test_a_training_split_too_small_to_train_is_refused() -> None:
    """One image makes no training step (a batch needs two): refused, not reported as trained."""
    with pytest.raises(InputError, match=r"data set too small: 1 training image\(s\), at least 2 needed"):
        load_data("synthetic:scales:n=1,test=1", (1, 16, 16))
    assert len(load_data("synthetic:scales:n=2,test=1", (1, 16, 16)).train) == 2


def test_synthetic_data_set_is_normalised() -> None:
    ds = load_data("synthetic:scales:n=200,test=50", (1, 16, 16))
    x = ds.batch(ds.train, torch.arange(200))
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-2
    assert ds.info.classes == ("horizontal", "vertical", "diagonal") and ds.info.context_px == 5


# -- image folders --------------------------------------------------------------------------------
def _png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (20, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.new("RGB", size, color).save(path)


def _folder(root: Path, per_class: int = 10) -> Path:
    for i in range(per_class):
        _png(root / "cats" / f"{i}.png", (200, 10, 10))
        _png(root / "dogs" / f"{i}.jpg", (10, 10, 200))
    return root


def test_image_folder_split_resize_and_labels(tmp_path: Path) -> None:
    ds = load_data(_folder(tmp_path / "pets"), (3, 8, 8))
    assert ds.info.kind == "folder" and ds.info.classes == ("cats", "dogs")
    assert (ds.info.train, ds.info.test) == (16, 4)  # 80/20 per class
    raw = ds.train.images(torch.arange(len(ds.train)))
    assert raw.shape == (16, 3, 8, 8)  # 20x12 images resized to the network's input
    for img, y in zip(raw, ds.train.labels):
        red = float(img[0].mean()) > float(img[2].mean())
        assert red == (int(y) == 0)  # cats are red: labels follow the folder names
    assert any("split 80/20" in n for n in ds.notes)


def test_image_folder_train_test_layout_and_grey(tmp_path: Path) -> None:
    for part, n in (("train", 6), ("test", 3)):
        for i in range(n):
            _png(tmp_path / part / "a" / f"{i}.png", (255, 255, 255))
            _png(tmp_path / part / "b" / f"{i}.png", (0, 0, 0))
    ds = load_data(tmp_path, (1, 4, 4))
    assert (ds.info.train, ds.info.test) == (12, 6)
    x = ds.test.images(torch.arange(6))
    assert x.shape == (6, 1, 4, 4)
    assert sorted(float(v) for v in x.mean(dim=(1, 2, 3))) == pytest.approx([0, 0, 0, 1, 1, 1], abs=1e-6)


def test_folder_errors_name_the_path(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: found 0 class folder"):
        load_data(tmp_path / "empty", (3, 8, 8))
    with pytest.raises(InputError, match="nowhere: no such directory"):
        load_data(tmp_path / "nowhere", (3, 8, 8))
    _png(tmp_path / "one" / "only" / "a.png", (1, 2, 3))
    with pytest.raises(InputError, match="found 1 class folder"):
        load_data(tmp_path / "one", (3, 8, 8))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError, match="file.txt: not a directory"):
        load_data(tmp_path / "file.txt", (3, 8, 8))
    with pytest.raises(InputError, match="images have 3 channels, the network takes 2|grey or RGB"):
        load_data(_folder(tmp_path / "pets"), (2, 8, 8))


def test_a_train_folder_without_test_split_says_so(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        _png(tmp_path / "train" / cls / "0.png", (1, 2, 3))
    with pytest.raises(InputError, match=r"has .*train but no test split \(no test, val, valid, validation folder"):
        load_data(tmp_path, (3, 8, 8))
    # beside other class folders too: train/ is not one class merging its sub-folders
    _folder(tmp_path, per_class=3)
    with pytest.raises(InputError, match=r"has .*train but no test split"):
        load_data(tmp_path, (3, 8, 8))


def test_a_class_called_train_holding_images_is_a_class(tmp_path: Path) -> None:
    root = _folder(tmp_path / "vehicles", per_class=3)
    for i in range(3):
        _png(root / "train" / f"{i}.png", (10, 200, 10))
    _png(root / "train" / "nested" / "3.png", (10, 200, 10))
    ds = load_data(root, (3, 8, 8))
    assert ds.info.classes == ("cats", "dogs", "train") and ds.info.train + ds.info.test == 10


def test_16_bit_grey_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    for cls in ("a", "b"):
        for i in range(3):
            p = tmp_path / cls / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            PIL.fromarray(ramp).save(p)
    assert PIL.open(tmp_path / "a" / "0.png").mode in ("I;16", "I")
    for c in (1, 3):
        ds = load_data(tmp_path, (c, 16, 16))
        x = ds.train.images(torch.arange(1))[0] * 255
        expected = torch.from_numpy(np.round(ramp / 257.0)).float()
        assert torch.allclose(x, expected.expand(c, -1, -1), atol=0.5)  # 0..255, not white


def _save_array(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.fromarray(arr).save(path)


@pytest.mark.parametrize("dtype,top,mode", [(np.float32, 1.0, "F"), (np.float32, 255.0, "F"),
                                            (np.float32, 400.0, "F"), (np.int32, 65535, "I")])
def test_32_bit_float_and_int_images_are_not_black(tmp_path: Path, dtype: Any, top: float, mode: str) -> None:
    """Mode F: values in [0, 1] scaled to 0..255, others clipped to 0..255; mode I: 0..65535 scaled
    to 0..255 (as 16-bit images)."""
    ramp = np.linspace(0, top, 16 * 16).reshape(16, 16).astype(dtype)
    for cls in ("a", "b"):
        for i in range(3):
            _save_array(tmp_path / cls / f"{i}.tiff", ramp)
    assert PIL.open(tmp_path / "a" / "0.tiff").mode == mode
    if mode == "F":
        want = np.clip(ramp.astype(np.float64) * (255.0 if top <= 1 else 1.0), 0, 255)
    else:
        want = ramp / 257.0
    for c in (1, 3):
        ds = load_data(tmp_path, (c, 16, 16))
        x = ds.train.images(torch.arange(1))[0] * 255
        assert float(x.max()) > 200  # not black
        assert torch.allclose(x, torch.from_numpy(np.round(want)).float().expand(c, -1, -1), atol=0.5)
        kind = "32-bit floats" if mode == "F" else "16/32-bit integers"
        assert any(f"6 image(s) of {kind}" in n for n in ds.notes)


def test_channel_conversion_of_a_folder_is_noted(tmp_path: Path) -> None:
    root = _folder(tmp_path / "pets", per_class=3)  # RGB
    for i in range(2):
        _save_array(root / "cats" / f"g{i}.png", np.full((8, 8), 90, np.uint8))  # grey
    grey = load_data(root, (1, 8, 8))
    assert f"{root}: 6 of 8 images are colour (or palette) images, converted to grey for the network's 1 channel" \
        in grey.notes
    rgb = load_data(root, (3, 8, 8))
    assert f"{root}: 2 of 8 images are grey, repeated to the network's 3 channels" in rgb.notes
    assert not any("converted to grey" in n for n in rgb.notes)
    only_rgb = load_data(_folder(tmp_path / "rgb", per_class=2), (3, 8, 8))
    assert not any("grey" in n for n in only_rgb.notes)


def test_resizing_and_dropped_alpha_of_a_folder_are_noted(tmp_path: Path) -> None:
    root = _folder(tmp_path / "pets", per_class=3)  # 20x12 (w x h) RGB
    for i in range(2):
        p = root / "dogs" / f"a{i}.png"
        PIL.new("RGBA", (8, 8), (10, 10, 200, 128)).save(p)
    ds = load_data(root, (3, 8, 8))
    assert f"{root}: 6 of 8 images (12x20) resized to 8x8" in ds.notes
    assert f"{root}: 2 image(s) with an alpha channel: the alpha is dropped (not composited)" in ds.notes
    same = load_data(root, (3, 12, 20))
    assert f"{root}: 2 of 8 images (8x8) resized to 12x20" in same.notes


def test_appledouble_files_are_skipped(tmp_path: Path) -> None:
    root = _folder(tmp_path / "pets", per_class=3)
    (root / "cats" / "._0.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    ds = load_data(root, (3, 8, 8))
    assert ds.info.train + ds.info.test == 6
    ds.train.images(torch.arange(len(ds.train)))  # no file fails to decode


def test_unreadable_files_are_skipped_up_front_with_one_note(tmp_path: Path) -> None:
    """Every header is read when the folder is listed: files Pillow cannot open are left out (not found
    mid-training), named in one note (the first three, then a count)."""
    root = _folder(tmp_path / "pets", per_class=5)
    for i in range(4):
        (root / "dogs" / f"bad{i}.png").write_bytes(b"not a png")
    (root / "cats" / "link.png").symlink_to(root / "nowhere.png")  # a broken link is unreadable too
    ds = load_data(root, (3, 8, 8))
    assert ds.info.train + ds.info.test == 10
    ds.train.images(torch.arange(len(ds.train)))
    ds.test.images(torch.arange(len(ds.test)))  # every file left decodes
    [note] = [n for n in ds.notes if "skipped 5 unreadable" in n]
    assert note.startswith(f"{root}: skipped 5 unreadable file(s)")
    assert "cats/link.png (No such file or directory); dogs/bad0.png (cannot identify image file); " in note
    assert note.endswith("; and 2 more")
    # a class whose every file is unreadable is an empty class: skipped with the usual note ...
    for i in range(3):
        (root / "birds" / f"{i}.png").parent.mkdir(exist_ok=True)
        (root / "birds" / f"{i}.png").write_bytes(b"junk")
    ds = load_data(root, (3, 8, 8))
    assert ds.info.classes == ("cats", "dogs") and any("without readable images: birds" in n for n in ds.notes)
    # ... and too few classes left is the usual error, which says files were skipped
    for p in (root / "cats").iterdir():
        p.unlink()
    with pytest.raises(InputError, match=r"found 1 class folder\(s\) with images \(7 unreadable file\(s\) skipped"):
        load_data(root, (3, 8, 8))


def test_an_image_that_fails_to_decode_later_is_named(tmp_path: Path) -> None:
    """A truncated PNG passes the header check; decoding it is an InputError naming the file."""
    root = _folder(tmp_path / "pets", per_class=3)
    for p in (root / "cats").iterdir():
        p.write_bytes(p.read_bytes()[:60])
    assert PIL.open(root / "cats" / "0.png").size == (20, 12)  # the header reads
    ds = None
    with pytest.raises(InputError, match=r"cats/\d\.png: cannot read image \(.*truncated"):
        ds = load_data(root, (3, 8, 8))
        ds.train.images(torch.arange(len(ds.train)))
    assert ds is None


def test_hidden_files_and_folders_in_class_folders_are_skipped(tmp_path: Path) -> None:
    root = _folder(tmp_path / "pets", per_class=3)
    _png(root / "cats" / ".thumbnails" / "x.png", (0, 255, 0))
    _png(root / "cats" / ".ipynb_checkpoints" / "deep" / "y.png", (0, 255, 0))
    _png(root / "dogs" / ".hidden.png", (0, 255, 0))
    (root / "dogs" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    _png(root / "dogs" / "nested" / "z.png", (10, 10, 200))  # visible sub-folders are searched
    ds = load_data(root, (3, 8, 8))
    assert ds.info.train + ds.info.test == 7 and not any("skipped" in n for n in ds.notes)
    x = torch.cat([ds.train.images(torch.arange(len(ds.train))), ds.test.images(torch.arange(len(ds.test)))])
    assert float(x[:, 1].max()) < 0.1  # no green image was read
    hidden_root = tmp_path / ".data" / "pets"  # a hidden folder above the data set is not a hidden path in it
    _folder(hidden_root, per_class=2)
    assert load_data(hidden_root, (3, 8, 8)).info.train + load_data(hidden_root, (3, 8, 8)).info.test == 4


def test_missing_pillow_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _folder(tmp_path / "pets", per_class=2)
    monkeypatch.setitem(__import__("sys").modules, "PIL", None)
    with pytest.raises(InputError, match=r"needs Pillow: pip install 'convscope\[probe\]'"):
        load_data(root, (3, 8, 8))


# -- CIFAR batches --------------------------------------------------------------------------------
def _cifar_batch(path: Path, n: int, seed: int, key: bytes = b"labels") -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"x", key: labels, b"data": data, b"filenames": [b"f"] * n}, f, protocol=2)
    return data, labels


def test_cifar_batches(tmp_path: Path) -> None:
    train = [_cifar_batch(tmp_path / f"data_batch_{i}", 20, i) for i in range(1, 3)]
    test_data, test_labels = _cifar_batch(tmp_path / "test_batch", 10, 9)
    with open(tmp_path / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f, protocol=2)
    ds = load_data(tmp_path, (3, 32, 32))
    assert ds.info.kind == "cifar" and (ds.info.train, ds.info.test) == (40, 10)
    assert ds.info.classes[:2] == ("c0", "c1")
    x = ds.test.images(torch.arange(10))
    # rows are 1024 red, 1024 green, 1024 blue values in row-major order
    expected = torch.from_numpy(test_data.reshape(10, 3, 32, 32).astype(np.float32) / 255.0)
    assert torch.allclose(x, expected)
    assert ds.test.labels.tolist() == test_labels
    assert ds.train.labels.tolist() == train[0][1] + train[1][1]
    small = load_data(tmp_path, (1, 16, 16))
    assert small.train.images(torch.arange(2)).shape == (2, 1, 16, 16)
    assert any("resized to 16x16" in n for n in small.notes)
    assert len([n for n in small.notes if "grey" in n]) == 1  # one note for both splits
    assert not any("missing" in n for n in ds.notes)
    (tmp_path / "data_batch_2").rename(tmp_path / "data_batch_3")  # a partial copy: batch 2 is not there
    assert any("data_batch_1, data_batch_3 read; data_batch_2 missing" in n for n in load_data(tmp_path, (3, 32, 32)).notes)


def test_cifar100_layout(tmp_path: Path) -> None:
    _cifar_batch(tmp_path / "train", 12, 1, key=b"fine_labels")
    _cifar_batch(tmp_path / "test", 6, 2, key=b"fine_labels")
    ds = load_data(tmp_path, (3, 32, 32))
    assert (ds.info.train, ds.info.test) == (12, 6)


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, ("touch /tmp/convscope-pwned-test",))


def test_cifar_unpickler_refuses_code(tmp_path: Path) -> None:
    Path("/tmp/convscope-pwned-test").unlink(missing_ok=True)
    _cifar_batch(tmp_path / "data_batch_1", 4, 1)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(InputError, match=r"test_batch: not a readable CIFAR batch \(refusing to load"):
        load_data(tmp_path, (3, 32, 32))
    assert not Path("/tmp/convscope-pwned-test").exists()


def test_cifar_wrong_content(tmp_path: Path) -> None:
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((3, 10), dtype=np.uint8), b"labels": [0, 1, 2]}, f, protocol=2)
    (tmp_path / "test_batch").write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"data_batch_1: not a CIFAR batch \(data \(3, 10\)"):
        load_data(tmp_path, (3, 32, 32))


def _write_batch(path: Path, labels: list, *, protocol: int = 2, str_keys: bool = False) -> np.ndarray:  # type: ignore[type-arg]
    data = np.random.default_rng(len(labels)).integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    d = {"data": data, "labels": labels, "batch_label": "x"}
    with open(path, "wb") as f:
        pickle.dump(d if str_keys else {k.encode(): v for k, v in d.items()}, f, protocol=protocol)
    return data


@pytest.mark.parametrize("protocol,str_keys", [(pickle.HIGHEST_PROTOCOL, False), (4, True), (5, True)])
def test_cifar_batches_written_by_python_3(tmp_path: Path, protocol: int, str_keys: bool) -> None:
    """Protocol 5 rebuilds arrays with numpy's _frombuffer; Python 3 dicts have str keys."""
    _write_batch(tmp_path / "data_batch_1", [0, 1, 2, 1], protocol=protocol, str_keys=str_keys)
    test = _write_batch(tmp_path / "test_batch", [2, 0], protocol=protocol, str_keys=str_keys)
    with open(tmp_path / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["x", "y", "z"]}, f, protocol=protocol)
    ds = load_data(tmp_path, (3, 32, 32))
    assert ds.info.classes == ("x", "y", "z") and ds.test.labels.tolist() == [2, 0]
    assert torch.allclose(ds.test.images(torch.arange(2)), torch.from_numpy(test.reshape(2, 3, 32, 32) / 255.0).float())


def test_cifar_protocol_5_still_refuses_code(tmp_path: Path) -> None:
    Path("/tmp/convscope-pwned-test").unlink(missing_ok=True)
    _write_batch(tmp_path / "data_batch_1", [0, 1], protocol=5)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({"data": _Evil(), "labels": [0]}, f, protocol=5)
    with pytest.raises(InputError, match=r"test_batch: not a readable CIFAR batch \(refusing to load posix.system"):
        load_data(tmp_path, (3, 32, 32))
    assert not Path("/tmp/convscope-pwned-test").exists()


@pytest.mark.parametrize("labels,found", [([0, -1, 1], "-1"), ([0, 1, 256], "256"), ([0, 1.5, 1], "1.5"),
                                          ([0, "cat", 1], "'cat'"), ([0, [1], 2], r"\[1\]")])
def test_cifar_labels_must_be_class_indices(tmp_path: Path, labels: list, found: str) -> None:  # type: ignore[type-arg]
    _write_batch(tmp_path / "data_batch_1", labels)
    _write_batch(tmp_path / "test_batch", [0, 1])
    with pytest.raises(InputError, match=rf"data_batch_1: labels must be a list of integer class indices 0..255, "
                                         rf"found {found}$"):
        load_data(tmp_path, (3, 32, 32))


def test_cifar_with_one_class_is_refused(tmp_path: Path) -> None:
    _write_batch(tmp_path / "data_batch_1", [3] * 5)
    _write_batch(tmp_path / "test_batch", [3, 3])
    with pytest.raises(InputError, match="the training split holds 1 class; need at least two classes"):
        load_data(tmp_path, (3, 32, 32))


def test_cifar_without_a_test_batch_says_so(tmp_path: Path) -> None:
    _write_batch(tmp_path / "data_batch_1", [0, 1])
    with pytest.raises(InputError, match=r"training batches \(data_batch_\*\) but no test batch: .*test_batch is "
                                         "missing"):
        load_data(tmp_path, (3, 32, 32))
    (tmp_path / "data_batch_1").rename(tmp_path / "train")
    with pytest.raises(InputError, match=r"training batches \(train\) but no test batch: .*test is missing"):
        load_data(tmp_path, (3, 32, 32))


# -- arrays ---------------------------------------------------------------------------------------
def test_from_arrays_resizes_and_repeats_grey() -> None:
    x = np.zeros((5, 8, 8), dtype=np.float32)
    x[:, :4] = 1.0  # top half bright
    ds = from_arrays(x, [0, 1, 0, 1, 0], x[:2], [1, 0], (3, 16, 16), name="toy")
    img = ds.train.images(torch.arange(5))
    assert img.shape == (5, 3, 16, 16)
    assert float(img[0, 1, :6].mean()) == pytest.approx(1.0) and float(img[0, 2, 10:].mean()) == pytest.approx(0.0)
    with pytest.raises(InputError, match="5 images but 4 labels"):
        from_arrays(x, [0, 1, 0, 1], x[:2], [1, 0], (3, 16, 16))
