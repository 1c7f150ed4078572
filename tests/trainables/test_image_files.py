"""celeba (torchvision's folder layout, the authors' crop, resize and split) and folder datasets,
on image files the tests make."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainables.config import TrialConfig
from trainables.data import DataFileError, image_shape, load_dataset

CELEBA_NOTES = ("list_eval_partition.txt", "identity_CelebA.txt", "list_attr_celeba.txt", "list_bbox_celeba.txt",
                "list_landmarks_align_celeba.txt")


def _framed(width: int, height: int, inner: int, inside, outside) -> Image.Image:
    """An RGB image of colour `outside` with a centred inner x inner square of colour `inside`."""
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:] = outside
    top, left = (height - inner) // 2, (width - inner) // 2
    pixels[top: top + inner, left: left + inner] = inside
    return Image.fromarray(pixels)


def _levels(x: torch.Tensor) -> np.ndarray:
    return ((x + 1) * 127.5).round().to(torch.uint8).numpy()


@pytest.fixture
def celeba_root(tmp_path, monkeypatch):
    """torchvision's CelebA layout with 10 aligned 178x218 images (PNG bytes under .jpg names, so
    the colours survive exactly); the annotation files are minimal and their md5 check is
    bypassed (the real files' sums cannot be matched by made-up content)."""
    import torchvision.datasets as tvd

    folder = tmp_path / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, 11)]
    for i, name in enumerate(names):
        image = _framed(178, 218, 140, inside=(20 * i, 255 - 20 * i, 7), outside=(255, 0, 255))
        image.save(folder / "img_align_celeba" / name, format="PNG")
    rows = "\n".join(f"{n} 0" for n in names) + "\n"
    (folder / "list_eval_partition.txt").write_text(rows)
    (folder / "identity_CelebA.txt").write_text(rows)
    for note, columns in (("list_bbox_celeba.txt", "x_1 y_1 width height"), ("list_landmarks_align_celeba.txt",
                          "lefteye_x lefteye_y"), ("list_attr_celeba.txt", "Smiling Young")):
        body = "\n".join(f"{n} " + " ".join("1" for _ in columns.split()) for n in names)
        (folder / note).write_text(f"{len(names)}\n{columns}\n{body}\n")
    monkeypatch.setattr(tvd.CelebA, "_check_integrity", lambda self: True)
    return tmp_path


def test_celeba_is_the_authors_crop_resize_and_seeded_split(celeba_root):
    train = load_dataset("celeba", "train", data_dir=str(celeba_root))
    test = load_dataset("celeba", "test", data_dir=str(celeba_root))
    assert train.shape == (7, 3, 32, 32) and test.shape == (1, 3, 32, 32)  # 70% and the next 10% of 10
    order = list(range(10))
    state = np.random.get_state()
    np.random.seed(2020)  # the authors' dataset.py: np.random.seed(2020); np.random.shuffle(indices)
    np.random.shuffle(order)
    np.random.set_state(state)
    for images, chosen in ((train, order[:7]), (test, order[7:8])):
        levels = _levels(images)  # (N, 3, 32, 32): the 140x140 centre only, the magenta frame cropped away
        expected = np.array([(20 * i, 255 - 20 * i, 7) for i in chosen], np.uint8)
        assert np.array_equal(levels, np.broadcast_to(expected[:, :, None, None], levels.shape))
    assert load_dataset("celeba", "train", data_dir=str(celeba_root), image_size=16).shape == (7, 3, 16, 16)
    part = load_dataset("celeba", "train", data_dir=str(celeba_root), subset=3)
    assert part.shape == (3, 3, 32, 32) and all(any(torch.equal(p, t) for t in train) for p in part)


def test_celeba_missing_files_name_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("celeba", "train", data_dir=str(tmp_path))
    message = str(err.value)
    assert "\n" not in message and f"{tmp_path}/celeba" in message
    assert all(name in message for name in ("img_align_celeba", *CELEBA_NOTES))


def _folder(root: Path, count: int = 20) -> list[int]:
    """count images of several sizes and formats, nested, plus files that are not images."""
    (root / "nested" / "deeper").mkdir(parents=True)
    values = []
    for i in range(count):
        where = root if i % 3 == 0 else root / "nested" if i % 3 == 1 else root / "nested" / "deeper"
        size = (40, 24) if i % 2 else (24, 40)  # landscape and portrait: resize the short side, crop the centre
        inner = min(size)
        value = 10 * i + 5
        _framed(*size, inner, inside=(value,) * 3, outside=(250, 0, 0)).save(
            where / f"img{i:02d}.{'png' if i % 4 else 'JPG'}", **({} if i % 4 else {"quality": 100}))
        values.append(value)
    (root / "notes.txt").write_text("not an image")
    return values


def test_folder_of_images_resized_and_split_by_a_seed(tmp_path):
    values = _folder(tmp_path)
    train = load_dataset("folder", "train", data_dir=str(tmp_path), image_size=16)
    test = load_dataset("folder", "test", data_dir=str(tmp_path), image_size=16)
    assert train.shape == (18, 3, 16, 16) and test.shape == (2, 3, 16, 16)
    seen = [int(np.median(_levels(x))) for x in torch.cat([train, test])]
    # every image once, square-cropped from its centre (no red frame), JPEG within a few levels
    assert sorted(round((v - 5) / 10) for v in seen) == list(range(20))
    assert all(abs(s - values[round((s - 5) / 10)]) <= 3 for s in seen)
    red = _levels(torch.cat([train, test]))
    assert not ((red[:, 0] > 200) & (red[:, 1] < 50)).any(), "the frame outside the centre square is cropped"
    torch.testing.assert_close(load_dataset("folder", "test", data_dir=str(tmp_path), image_size=16), test)
    assert load_dataset("folder", "train", data_dir=str(tmp_path)).shape == (18, 3, 32, 32)  # default size


def test_folder_errors_name_the_folder_or_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds 0 PNG/JPEG images"):
        load_dataset("folder", "train", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_dataset("folder", "train", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="needs --data-dir"):
        load_dataset("folder", "train")
    _folder(tmp_path, count=4)
    broken = tmp_path / "zz_broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataFileError, match=f"{broken}: not a readable image"):
        for split in ("train", "test"):
            load_dataset("folder", split, data_dir=str(tmp_path))


def test_image_size_is_validated_and_shapes_follow_it():
    assert image_shape("folder", 48) == (3, 48, 48) and image_shape("celeba") == (3, 32, 32)
    assert image_shape("mnist") == (1, 28, 28)
    TrialConfig.from_flat({"dataset": "folder", "image_size": 64, "data_dir": "/x"})
    for bad, says in (({"dataset": "mnist", "image_size": 32}, "applies to celeba and folder only"),
                      ({"dataset": "folder", "image_size": 30}, "multiple of 4"),
                      ({"train_subset": -1}, "train_subset must be >= 0")):
        with pytest.raises(ValueError, match=says):
            TrialConfig.from_flat(bad)
