"""``mast-mask``: a first-frame mask (palette PNG) from boxes and clicks on an image.

::

    mast-mask --image IMG --box X0,Y0,X1,Y1 [--box ...] [--click X,Y[:fg|bg] ...] --out MASK.png

Box k (in the order given) becomes object id k (1..n); pixel corners, X1/Y1 exclusive; boxes are
clipped to the image; where boxes overlap the later box wins. A click is sure foreground (``:fg``,
the default) or background (``:bg``) for every box that contains it. The segmentation is
:mod:`mast.runtime.boxmask` (GrabCut on the box and its near surroundings). Errors (unreadable
image, a box outside the image, a foreground click in no box, an unwritable output) are one line
on stderr, exit code 2; a box where GrabCut finds nothing is kept whole with a warning.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer

from mast.core.cli import consoles, exit_on_error
from mast.core.errors import InputError
from mast.core.images import read_image
from mast.core.masks import write_mask
from mast.runtime.boxmask import GrabCutConfig, boxes_to_mask, parse_box, parse_click


def save_mask(path: Path, ids: np.ndarray) -> None:
    """Write ``ids`` ``uint8 [H, W]`` as a palette PNG at ``path`` (parents created); InputError if impossible."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_mask(path, ids)
    except OSError as exc:
        raise InputError(f"cannot write mask {path}: {exc.strerror or exc} (expected a writable .png path): "
                         "choose another output path") from exc


def make_mask(image: Path, boxes: list[str], clicks: list[str], out: Path,
              config: GrabCutConfig = GrabCutConfig()) -> tuple[np.ndarray, list[str]]:
    """Parse, segment and write: returns (ids ``uint8 [H, W]``, warnings). Raises MastError for bad input."""
    parsed_boxes = [parse_box(b) for b in boxes]
    parsed_clicks = [parse_click(c) for c in clicks]
    ids, warnings = boxes_to_mask(read_image(image), parsed_boxes, parsed_clicks, config)
    save_mask(out, ids)
    return ids, warnings


app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False,
                  help="Make a first-frame mask (palette PNG) from boxes and clicks on an image.")


@app.command()
def cli(
    image: Path = typer.Option(..., "--image", help="The frame to segment (.jpg/.png)."),
    box: list[str] = typer.Option(..., "--box", help="X0,Y0,X1,Y1 in pixels (X1, Y1 exclusive); repeat for more objects: ids 1..n in this order, a later box wins on overlap."),
    click: Optional[list[str]] = typer.Option(None, "--click", help="X,Y[:fg|bg]: sure foreground (default) or background for the box(es) containing it; repeatable."),
    out: Path = typer.Option(..., "--out", help="Mask PNG to write (palette, ids 1..n)."),
) -> None:
    """Segment the object in each --box of --image (GrabCut on the box and its near surroundings) and write the ids as a palette PNG.

    Errors are one line on stderr with exit code 2; a box where GrabCut finds nothing is kept whole, with a warning.
    """  # noqa: E501 - typer keeps docstring line breaks: one line per paragraph
    console, err = consoles()
    with exit_on_error(err):
        ids, warnings = make_mask(image, box, click or [], out)
    for warning in warnings:
        err.print(f"warning: {warning}")
    areas = np.bincount(ids.reshape(-1), minlength=len(box) + 1)[1:]
    console.print(f"wrote {out} ({ids.shape[1]}x{ids.shape[0]}): "
                  + ", ".join(f"id {k} {a} px" for k, a in enumerate(areas, start=1)))


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point (``mast-mask``)."""
    app(args=argv, prog_name="mast-mask")


if __name__ == "__main__":  # pragma: no cover
    main()
