"""A/B of what ``mast-run``'s window draws per frame (the overlay: colours + ids, then the window's
text: live fps + keys) between this revision's ``mast/runtime/drawing.py`` and another version of
that file, on the bundled clip's frames and masks resized to ``--size``, alternating the two in one
process (timings on a shared machine drift; alternating keeps the comparison fair).

    git show a767643:mast/runtime/drawing.py > /tmp/drawing_old.py
    python benchmarks/bench_drawing.py --against /tmp/drawing_old.py --size 240x427 --repeats 200

Prints per version and stage the CPU time of this process (min / median ms per frame) and the
largest pixel difference between the two versions' images. ``--show`` (needs a display, e.g.
``xvfb-run -a``) also shows each image in an OpenCV window as ``mast-run`` does (``imshow`` +
``waitKey(1)``: the toolkit paints there), timed as ``show`` in CPU and wall ms (the wall time
includes ``waitKey``'s wait: 2 ms or more with OpenCV's Qt backend).
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np

from mast.core.images import list_images, read_image
from mast.core.masks import read_mask
from mast.runtime import drawing
from mast.runtime.bench import cpu_isa, cpu_name
from mast.runtime.demo_clip import DEMO_FRAMES, DEMO_MASK
from mast.runtime.sinks import WindowSink, display_available


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("drawing_other", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def window_text(module: ModuleType, img: np.ndarray) -> np.ndarray:
    """The window's text with ``module``: its ``draw_status``, or (older versions) the same two calls
    ``WindowSink`` made before ``draw_status`` existed."""
    if hasattr(module, "draw_status"):
        return module.draw_status(img, "12.3 fps", WindowSink.legend)
    scale = max(0.5, min(img.shape[:2]) / 600.0)
    module.put_text(img, "12.3 fps", (10, int(30 * scale) + 5), scale)
    return module.draw_legend(img, WindowSink.legend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, required=True, help="another version of mast/runtime/drawing.py")
    parser.add_argument("--size", default="240x427", help="HxW the clip's frames and masks are resized to")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--show", action="store_true", help="also show the images in a window (needs a display)")
    args = parser.parse_args()
    if args.show and not display_available():
        parser.error("--show needs a display (run it under xvfb-run -a)")
    cv2.setNumThreads(1)
    h, w = (int(v) for v in args.size.split("x"))
    frames = [cv2.resize(read_image(f, "frame"), (w, h), interpolation=cv2.INTER_AREA)
              for f in list_images(DEMO_FRAMES)]
    mask = cv2.resize(read_mask(DEMO_MASK), (w, h), interpolation=cv2.INTER_NEAREST)
    versions = {"this revision": drawing, str(args.against): load(args.against)}
    stages = ("overlay", "window") + (("show", "show wall") if args.show else ())
    times = {(v, s): [] for v in versions for s in stages}
    if args.show:
        cv2.namedWindow("bench_drawing", cv2.WINDOW_NORMAL)
    images = {}
    for k in range(args.repeats):
        frame = frames[k % len(frames)]
        for name, module in versions.items():
            start = time.process_time()
            overlay = module.render(frame, mask)
            middle = time.process_time()
            shown = window_text(module, overlay.copy())
            end = time.process_time()
            times[name, "overlay"].append(middle - start)
            times[name, "window"].append(end - middle)
            if args.show:
                wall = time.perf_counter()
                cv2.imshow("bench_drawing", shown)
                cv2.waitKey(1)
                times[name, "show"].append(time.process_time() - end)
                times[name, "show wall"].append(time.perf_counter() - wall)
            images[name] = shown
    print(f"{cpu_name()} ({cpu_isa()}), 1 OpenCV thread, {h}x{w}, {args.repeats} frames, ms per frame "
          "(CPU time; 'show wall': wall time)")
    for (name, stage), values in times.items():
        ms = np.asarray(values) * 1e3
        print(f"  {name:40s} {stage:9s} min {ms.min():6.3f}  median {np.median(ms):6.3f}")
    a, b = images.values()
    print(f"  largest pixel difference between the two images: {int(np.abs(a.astype(int) - b).max())}")


if __name__ == "__main__":
    main()
