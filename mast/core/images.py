"""Image files: the one reader and the one name order of every stage (torch-free).

``read_image`` decodes a ``.jpg``/``.png`` frame as OpenCV BGR ``uint8 [H, W, 3]`` (evaluation,
training, the runtime's frame folders, ``mast-mask``, the demo clip); ``natural_key`` orders file
names with their digit runs compared as numbers (``f2.jpg`` before ``f10.jpg``), and
``list_images`` lists a folder's frames in that order.
"""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from mast.core.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")   # frame files every reader takes (compared lower-case)


def natural_key(name: str) -> list[int | str]:
    """Sort key of a file ``name``: digit runs compare as numbers, the rest case-insensitively."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def is_image(path: Path) -> bool:
    """True when ``path`` names a frame file by its suffix (:data:`IMAGE_SUFFIXES`)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: str | Path) -> list[Path]:
    """The frame files of ``folder`` (not hidden, :data:`IMAGE_SUFFIXES`) in :func:`natural_key` order;
    an empty list when it holds none. The caller says what a missing folder means."""
    files = [p for p in Path(folder).iterdir() if p.is_file() and is_image(p) and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


def read_image(path: str | Path, what: str = "image") -> np.ndarray:
    """The image at ``path`` as BGR ``uint8 [H, W, 3]`` (grey and alpha images converted).

    ``what`` names it in the errors ("frame", "image"). Raises InputError when the file is missing
    or not a decodable image. Bytes are read by numpy, so any path the OS takes works.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path} (expected a .jpg or .png file): check the path")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(f"cannot read {what} {path} (expected a valid JPEG or PNG image): "
                         "replace or remove the file")
    return image
