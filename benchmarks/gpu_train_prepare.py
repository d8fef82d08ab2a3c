"""Pack the training video into ``.gpu_data/`` so that one device call can carry it (issue 12).

The device tool carries at most 64 MiB of working tree per call and never ``../shared``; the 31
frame folders of ``raw-videos`` are 79 MB of JPEGs. Re-encoded as MPEG-4 videos (``mp4v``, what
``mast-train`` reads like any other video) at their own size they take a few MB. The three
videos of ``raw-videos/videos`` are copied as they are.

    python benchmarks/gpu_train_prepare.py [--data ../shared/data/raw-videos] [--out .gpu_data]

Then ``run(command="bash benchmarks/gpu_train.sh", carry=[".gpu_data"], timeout_s=590)`` (see
gpu_train.sh). ``.gpu_data/`` must be git-ignored (``.gitignore`` lists it).
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2

from mast.training.data import discover_sources

FPS = 25.0


def pack_folder(files: list[Path], out: Path) -> int:
    """Write the frames ``files`` (natural order) as one mp4v video ``out``; returns the frame count."""
    first = cv2.imread(str(files[0]), cv2.IMREAD_COLOR)
    if first is None:
        raise SystemExit(f"cannot read {files[0]}")
    h, w = first.shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (w, h))
    try:
        for path in files:
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            writer.write(cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA) if frame.shape[:2] != (h, w) else frame)
    finally:
        writer.release()
    return len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/raw-videos", type=Path)
    parser.add_argument("--out", default=".gpu_data", type=Path)
    args = parser.parse_args()
    videos = args.out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    frames = 0
    for source in discover_sources([args.data]):
        if source.is_video:
            shutil.copy2(source.path, videos / source.path.name)
        else:
            frames += pack_folder(list(source.frames), videos / f"{source.path.name}.mp4")
    size = sum(p.stat().st_size for p in videos.iterdir()) / 2**20
    print(f"{len(list(videos.iterdir()))} videos ({frames} frames packed) in {videos}: {size:.1f} MiB")


if __name__ == "__main__":
    main()
