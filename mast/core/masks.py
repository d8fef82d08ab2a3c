"""Object masks as PNG files (torch-free).

A mask is a ``uint8`` array ``[H, W]`` of object ids: 0 = background, 1..255 = objects.
Accepted on disk: palette PNGs (DAVIS-2017, YouTube-VOS) and 8-bit grayscale 0/255 PNGs
(DAVIS-2016, one object, read as ids 0/1). Written: palette PNGs with the DAVIS palette.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mast.core.errors import InputError


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map: ``[256, 3]`` uint8, id 0 black, 1 red, 2 green, ..."""
    pal = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


_PALETTE = davis_palette()


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask PNG as object ids ``[H, W]`` uint8.

    Palette PNGs keep their ids. Grayscale (or RGB-gray) PNGs with values {0, 255} are DAVIS-2016
    masks and become ids {0, 1}; other grayscale values are taken as ids as they are.
    Raises InputError for a missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"mask not found: {path} (expected a palette PNG or a 0/255 grayscale PNG)")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                ids = np.array(im, dtype=np.uint8)
            else:
                arr = np.array(im.convert("L"), dtype=np.uint8)
                values = np.unique(arr)
                ids = (arr > 127).astype(np.uint8) if set(values.tolist()) <= {0, 255} else arr
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read mask {path}: {exc} (expected a PNG image)") from exc
    return ids


def write_mask(path: str | Path, ids: np.ndarray) -> None:
    """Write object ids ``[H, W]`` (uint8) as a palette PNG with the DAVIS palette.

    The palette is always set: without one, Pillow renumbers the ids of a P-mode image.
    """
    path = Path(path)
    im = Image.fromarray(np.ascontiguousarray(ids, dtype=np.uint8), mode="P")
    im.putpalette(_PALETTE.reshape(-1).tolist())
    tmp = path.with_name(path.name + ".tmp")
    im.save(tmp, format="PNG")
    tmp.replace(path)


def colour_overlay(bgr: np.ndarray, ids: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the palette colours of ``ids`` ``[H, W]`` over a BGR uint8 image ``[H, W, 3]``."""
    colours = _PALETTE[ids][..., ::-1].astype(np.float32)
    fg = (ids > 0)[..., None]
    out = np.where(fg, (1 - alpha) * bgr.astype(np.float32) + alpha * colours, bgr.astype(np.float32))
    return out.astype(np.uint8)
