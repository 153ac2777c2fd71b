"""Adversarial images as 8-bit PNG files, with the L-inf budget kept after rounding.

A submitted adversarial image is a PNG file: each pixel one of 256 levels, so
the float perturbation an attack found is rounded. Rounding to the nearest
level can push a pixel past the budget (a clean pixel at level 100 with a
budget of 8 levels and an attack value of 108.4 is fine; one that is not on a
level to begin with, as the 17-level digits are, may round outside it), so
`to_levels` rounds to the nearest level inside the budget instead: toward the
clean image where the nearest level is outside it. `write_images` and
`read_images` use the course homework's layout, `<class>/<class><index>.png`,
where `index` is the sample's index in its split.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from .runs import atomic_path

LEVELS = 255

# Float32 images of 8-bit data hold k / 255 only up to ~1.5e-5 levels: a level
# within this many levels of the budget's edge counts as inside it.
LEVEL_TOLERANCE = 1e-4

# The L-inf distance of rounded images may exceed the budget by float error only.
BUDGET_TOLERANCE = 1e-6

# Class folder names of known datasets; others use the class index.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "cifar10": (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),  # fmt: skip
}


def class_names(dataset: str, num_classes: int) -> tuple[str, ...]:
    """Folder names of the classes: the dataset's own names, else `"0"`, `"1"`, ..."""
    names = CLASS_NAMES.get(dataset)
    if names is not None and len(names) == num_classes:
        return names
    return tuple(str(k) for k in range(num_classes))


def to_levels(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Round adversarial images to 8-bit levels that stay within `eps` (L-inf) of `x`.

    Each pixel goes to its nearest level in `[x - eps, x + eps]` (and in [0, 1]):
    the nearest level when that one is inside the budget, else the level at the
    budget's edge, toward the clean pixel. A clean pixel that is not on a level
    (17-level digits) with no level within `eps` of it (`eps` under half a
    level) gets its own nearest level: the rounding every 8-bit copy of the
    clean image has too (`check_budget` allows exactly that).

    Args:
        x_adv: Adversarial images in [0, 1].
        x: The clean images, same shape.
        eps: The L-inf budget in pixel units, >= 0.

    Returns:
        uint8 levels, same shape, on `x_adv`'s device.

    Raises:
        ValueError: If the shapes differ.
    """
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv has shape {tuple(x_adv.shape)}, x {tuple(x.shape)}")
    clean, budget = x.double() * LEVELS, eps * LEVELS
    low = torch.ceil(clean - budget - LEVEL_TOLERANCE).clamp(0, LEVELS)
    high = torch.floor(clean + budget + LEVEL_TOLERANCE).clamp(0, LEVELS)
    empty = low > high
    nearest_clean = torch.round(clean).clamp(0, LEVELS)
    low, high = torch.where(empty, nearest_clean, low), torch.where(empty, nearest_clean, high)
    levels = torch.round(x_adv.double() * LEVELS).clamp(min=low, max=high)
    return levels.to(torch.uint8)


def from_levels(levels: torch.Tensor) -> torch.Tensor:
    """uint8 levels as float32 images in [0, 1]."""
    return levels.to(torch.float32) / LEVELS


def linf_distance(images: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Each sample's L-inf distance between `images` and `x` (float64, shape `(N,)`)."""
    return (images.double() - x.double()).abs().flatten(1).amax(dim=1)


def check_budget(images: torch.Tensor, x: torch.Tensor, eps: float) -> float:
    """The largest L-inf distance of `images` from `x`, checked against the budget.

    A pixel may be `eps` from the clean one, or further only as far as the
    clean pixel is from its own nearest 8-bit level (never, for 8-bit data).

    Raises:
        ValueError: If some pixel is further.
    """
    if len(x) == 0:
        return 0.0
    distance = (images.double() - x.double()).abs()
    own = (torch.round(x.double() * LEVELS) / LEVELS - x.double()).abs()
    over = distance - torch.maximum(own, torch.full_like(own, eps))
    if float(over.max()) > BUDGET_TOLERANCE:
        raise ValueError(
            f"the images are up to {float(distance.max()):.6g} (L-inf) from the clean ones, "
            f"over eps={eps:.6g}"
        )
    return float(distance.max())


def image_path(directory: str | os.PathLike, name: str, index: int) -> Path:
    """`directory/<class>/<class><index>.png`."""
    return Path(directory) / name / f"{name}{index}.png"


def write_images(
    directory: str | os.PathLike,
    levels: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor,
    names: tuple[str, ...],
) -> list[Path]:
    """Write 8-bit images as PNG files `directory/<class>/<class><index>.png`, atomically.

    Args:
        directory: Where to write (created when missing).
        levels: uint8 images `(N, C, H, W)` with `C` of 1 (grey) or 3 (RGB).
        y: Their classes, which name the folders through `names`.
        indices: Each image's index in its split, which names the file.
        names: The class folder names (see `class_names`).

    Returns:
        The paths written, in the order of the images.

    Raises:
        ValueError: For images that are not uint8 `(N, 1 or 3, H, W)`.
    """
    from PIL import Image

    if levels.dtype != torch.uint8 or levels.ndim != 4 or levels.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be uint8 (N, 1 or 3, H, W) to be saved as PNG, got "
            f"{levels.dtype} {tuple(levels.shape)}"
        )
    paths = []
    pixels = levels.permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, C)
    for image, label, index in zip(pixels, y.tolist(), indices.tolist(), strict=True):
        path = image_path(directory, names[label], index)
        picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        with atomic_path(path) as tmp:
            picture.save(tmp, format="PNG")
        paths.append(path)
    return paths


def read_images(
    directory: str | os.PathLike, names: tuple[str, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read PNG files in the layout `write_images` writes.

    Returns:
        `(levels, y, indices)`: uint8 images `(N, C, H, W)`, their classes (from
        the folder) and indices (from the file name), sorted by index.

    Raises:
        ValueError: For a missing or empty directory, a file or folder that does
            not fit the layout, images of different shapes, or an index twice.
    """
    from PIL import Image

    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"image directory {str(directory)!r} does not exist")
    images, labels, indices = [], [], []
    for path in sorted(directory.rglob("*.png")):
        label, index = _parse_name(path, directory, names)
        with Image.open(path) as picture:
            array = np.asarray(picture.convert("RGB" if picture.mode != "L" else "L"))
        images.append(array[..., None] if array.ndim == 2 else array)
        labels.append(label)
        indices.append(index)
    if not images:
        raise ValueError(f"no .png files in {directory}")
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise ValueError(f"the images in {directory} differ in shape: {sorted(shapes)}")
    if len(set(indices)) < len(indices):
        raise ValueError(f"{directory} holds some index in two class folders")
    order = np.argsort(indices)
    levels = torch.from_numpy(np.stack(images)[order]).permute(0, 3, 1, 2).contiguous()
    return levels, torch.tensor(labels)[order], torch.tensor(indices)[order]


def _parse_name(path: Path, directory: Path, names: tuple[str, ...]) -> tuple[int, int]:
    """`(class, index)` of `directory/<class>/<class><index>.png`."""
    relative = path.relative_to(directory)
    folder = relative.parts[0] if len(relative.parts) == 2 else None
    match = re.fullmatch(rf"{re.escape(folder)}(\d+)\.png", path.name) if folder else None
    if folder not in names or match is None:
        raise ValueError(
            f"{relative} does not fit the layout <class>/<class><index>.png with a class "
            f"among {', '.join(names)}"
        )
    return names.index(folder), int(match.group(1))
