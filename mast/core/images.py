"""Image files: the one reader and the one name order of every stage (torch-free).

``read_image`` decodes a ``.jpg``/``.png`` frame as OpenCV BGR ``uint8 [H, W, 3]`` (evaluation,
training, the runtime's frame folders, ``mast-mask``, the demo clip); ``read_frame`` does the same
for a stream, where a JPEG cut short is decoded as far as it goes and reported rather than refused; ``natural_key`` orders file
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
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"   # SOI / EOI markers


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


def read_frame(path: str | Path, what: str = "frame") -> tuple[np.ndarray, str | None]:
    """``read_image`` for a stream: a JPEG cut short (its end marker missing, as when a copy or a
    camera's write was interrupted) is decoded as far as its data goes (libjpeg fills the rest
    with grey) and returned with a one-line warning naming the file; anything else undecodable
    raises InputError as ``read_image`` does. Returns (BGR ``uint8 [H, W, 3]``, warning or None)."""
    try:
        return read_image(path, what), None
    except InputError:
        data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else np.zeros(0, np.uint8)
        raw = data.tobytes()
        if not raw.startswith(JPEG_START) or raw.rstrip(b"\x00").endswith(JPEG_END):
            raise
        image = cv2.imdecode(np.frombuffer(raw + JPEG_END, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise
        return image, (f"{what} {path} is a truncated JPEG ({len(raw)} bytes, no end marker): tracked as "
                       "decoded, the part after the cut is grey")
