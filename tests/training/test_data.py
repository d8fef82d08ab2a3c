"""Training data: discovery, decoding, skipping bad sources, sampling rules, determinism."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mast.core.errors import InputError
from mast.training.data import (
    ClipDataset,
    DataConfig,
    DataConfigError,
    SkippedVideoWarning,
    build_dataset,
    collate_clips,
    discover_sources,
    frame_shape,
    load_corpus,
)

SIZE = 32
LEVEL = 8  # frame k of a synthetic clip is a flat image of grey level LEVEL * k


def cfg(**kw) -> DataConfig:
    kw.setdefault("size", SIZE)
    kw.setdefault("progress", False)
    return DataConfig(**kw)


def write_video(path: Path, n: int, width: int = 64, height: int = 48) -> Path:
    """An mp4v video of ``n`` flat frames, frame k at grey level LEVEL * k."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (width, height))
    assert writer.isOpened()
    for k in range(n):
        writer.write(np.full((height, width, 3), LEVEL * k, np.uint8))
    writer.release()
    return path


def write_frames(folder: Path, n: int, width: int = 40, height: int = 90, ext: str = ".png",
                 name: str = "{:05d}") -> Path:
    """A frame folder of ``n`` flat frames, frame k at grey level LEVEL * k."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        cv2.imwrite(str(folder / (name.format(k) + ext)), np.full((height, width, 3), LEVEL * k, np.uint8))
    return folder


def skipped(record: list) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, SkippedVideoWarning)]


def load_recording(paths, config):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        corpus = load_corpus(paths, config)
    return corpus, skipped(record)


def levels(sample: dict) -> np.ndarray:
    """Frame index encoded in each frame of an unaugmented sample."""
    return np.round(sample["frames"].double().mean(dim=(1, 2, 3)).numpy() / LEVEL).astype(int)


@pytest.fixture(scope="module")
def video30(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("v30") / "clip.mp4", 30)


# --------------------------------------------------------------------------------------------
# sampling rules


def test_pair_gaps_within_range_and_indices_inside_video(video30):
    config = cfg(gap_min=2, gap_max=8)
    ds = ClipDataset(load_corpus([video30], config), config, "pair")
    gaps = []
    for i in range(400):
        _, idx = ds.sample_indices(i)
        assert idx.shape == (2,) and 0 <= idx[0] < idx[1] < 30
        gaps.append(idx[1] - idx[0])
    assert set(gaps) == set(range(2, 9))
    sample = ds[3]
    assert sample["frames"].shape == (2, 3, SIZE, SIZE) and sample["frames"].dtype == torch.uint8
    assert sample["distances"].tolist() == [int(sample["frame_indices"][1] - sample["frame_indices"][0])]


def test_memory_clip_layout(video30):
    config = cfg()
    ds = ClipDataset(load_corpus([video30], config), config, "memory")
    far_seen = set()
    for i in range(300):
        _, idx = ds.sample_indices(i)
        d = idx[-1] - idx[:-1]
        assert idx.shape == (6,) and np.all(np.diff(idx) > 0) and 0 <= idx[0] and idx[-1] < 30
        assert 16 <= d[0] <= 29 and d[1] == d[0] - 5  # long-term, clipped to the video
        assert len(set(d[2:])) == 3 and all(1 <= x <= 5 for x in d[2:])  # short-term, distinct
        far_seen.add(int(d[0]))
    assert far_seen == set(range(16, 30))
    sample = ds[0]
    assert sample["frames"].shape == (6, 3, SIZE, SIZE)
    assert torch.equal(sample["distances"], sample["frame_indices"][-1] - sample["frame_indices"][:-1])


def test_frames_are_the_sampled_indices_in_order(tmp_path):
    video = write_video(tmp_path / "v.mp4", 25)
    folder = write_frames(tmp_path / "seq", 25, name="f{}")  # f0..f24: natural, not lexical, order
    config = cfg(augment=False)
    for source in (video, folder):
        for stage in ("pair", "memory"):
            ds = ClipDataset(load_corpus([source], config), config, stage)
            for i in range(10):
                sample = ds[i]
                assert levels(sample).tolist() == sample["frame_indices"].tolist()


def test_augmentation_is_consistent_across_the_sample(tmp_path):
    # every frame identical (a gradient): after augmentation they must still be identical
    folder = tmp_path / "same"
    folder.mkdir()
    ramp = np.tile(np.linspace(0, 255, 50, dtype=np.uint8)[None, :, None], (40, 1, 3))
    for k in range(30):
        cv2.imwrite(str(folder / f"{k:03d}.png"), ramp)
    config = cfg(crop_scale_min=0.5, brightness=0.3)
    ds = ClipDataset(load_corpus([folder], config), config, "memory")
    plain = ClipDataset(ds.corpus, cfg(augment=False), "memory")[0]["frames"][0]
    changed = 0
    for i in range(20):
        frames = ds[i]["frames"]
        assert all(torch.equal(frames[0], f) for f in frames[1:])
        changed += not torch.allclose(frames[0], plain)
    assert changed > 0


def test_float_output_is_uint8_over_255(video30):
    as_u8, as_f32 = cfg(brightness=0.3), cfg(brightness=0.3, as_float=True)
    corpus = load_corpus([video30], as_u8)
    for i in range(3):
        a, b = ClipDataset(corpus, as_u8, "memory")[i], ClipDataset(corpus, as_f32, "memory")[i]
        assert a["frames"].dtype == torch.uint8 and b["frames"].dtype == torch.float32
        assert torch.equal(a["frames"].float() / 255, b["frames"])
        assert 0 <= b["frames"].min() and b["frames"].max() <= 1


# --------------------------------------------------------------------------------------------
# skipping bad sources


def test_short_video_skipped_with_one_warning(tmp_path, video30):
    short = write_video(tmp_path / "short.mp4", 10)
    one = write_video(tmp_path / "one.mp4", 1)
    config = cfg()
    corpus, warned = load_recording([video30, short, one], config)
    assert len(warned) == 1 and "one.mp4" in warned[0]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ds = ClipDataset(corpus, config, "memory")  # needs 17 frames
    warned = skipped(record)
    assert len(warned) == 1 and "short.mp4" in warned[0]
    assert {ds.sample_indices(i)[0] for i in range(50)} == {corpus.names.index(str(video30))}


def test_corrupt_video_skipped_with_one_warning(tmp_path, video30):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(video30.read_bytes()[:300])
    corpus, warned = load_recording([video30, bad, truncated], cfg())
    assert len(warned) == 2
    assert any("corrupt.mp4" in w for w in warned) and any("truncated.mp4" in w for w in warned)
    assert corpus.names == [str(video30)]


def test_unreadable_frame_folder_skipped(tmp_path, video30):
    folder = write_frames(tmp_path / "broken", 5, ext=".jpg")
    (folder / "00002.jpg").write_bytes(b"not a jpeg")
    corpus, warned = load_recording([video30, folder], cfg())
    assert len(warned) == 1 and "broken" in warned[0] and len(corpus) == 1


def test_no_usable_video_raises_input_error(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "junk.mp4").write_bytes(os.urandom(2048))
    with pytest.warns(SkippedVideoWarning), pytest.raises(InputError, match=str(root)):
        load_corpus([root], cfg())
    write_video(root / "short.mp4", 8)
    with pytest.warns(SkippedVideoWarning, match="junk.mp4"):
        corpus = load_corpus([root], cfg())
    with pytest.warns(SkippedVideoWarning, match="short.mp4"), pytest.raises(InputError, match="memory"):
        ClipDataset(corpus, cfg(), "memory")


@pytest.mark.parametrize("case", ["missing", "empty", "not_video"])
def test_bad_paths_raise_input_error(tmp_path, case):
    path = {"missing": tmp_path / "nope", "empty": tmp_path, "not_video": tmp_path / "notes.txt"}[case]
    if case == "not_video":
        path.write_text("hello")
    with pytest.raises(InputError, match=str(path)):
        load_corpus([path], cfg())


# --------------------------------------------------------------------------------------------
# sources of different kinds and sizes


def test_videos_and_frame_folders_of_different_sizes(tmp_path):
    root = tmp_path / "raw"
    write_video(root / "videos" / "wide.mp4", 30, width=96, height=40)
    write_video(root / "small.avi", 20, width=16, height=24)
    write_frames(root / "frames" / "tall", 20, width=30, height=70, ext=".jpg")
    write_frames(root / "frames" / "png", 25, width=50, height=50, ext=".png")
    write_frames(root / "a" / "b" / "too_deep", 20)  # three levels down: not searched
    assert len(discover_sources([root])) == 4
    config = cfg(size=48)
    corpus = load_corpus([root], config)
    for stage in ("pair", "memory"):
        ds = ClipDataset(corpus, config, stage)
        seen = {int(ds[i]["video"]) for i in range(60)}
        assert seen == set(range(4))
        assert ds[0]["frames"].shape == (config.clip_length(stage), 3, 48, 48)


@pytest.mark.parametrize("height, width, size, expected", [
    (256, 455, 128, (128, 228)), (480, 854, 256, (256, 455)), (90, 40, 32, (72, 32)), (50, 50, 48, (48, 48))])
def test_crop_framing_keeps_the_aspect(height, width, size, expected):
    assert frame_shape(height, width, size, "crop") == expected
    assert frame_shape(height, width, size, "squash") == (size, size)


def test_crop_framing_samples_square_windows_with_the_aspect_kept(tmp_path):
    # a wide frame holding a disc: squashed it becomes an ellipse, cropped it stays a disc
    folder = tmp_path / "disc"
    folder.mkdir()
    frame = np.zeros((60, 120, 3), np.uint8)
    cv2.circle(frame, (60, 30), 20, (255, 255, 255), -1)
    for k in range(12):
        cv2.imwrite(str(folder / f"{k:03d}.png"), frame)
    squash, crop = cfg(size=32, augment=False), cfg(size=32, augment=False, framing="crop")
    corpus = load_corpus([folder], crop)
    assert corpus.stores[0].get(np.array([0])).shape == (1, 32, 64, 3)
    for config in (squash, crop):
        corpus = load_corpus([folder], config)
        disc = ClipDataset(corpus, config, "pair")[0]["frames"][0, 0].numpy() > 127
        rows, cols = np.nonzero(disc)
        aspect = (np.ptp(cols) + 1) / (np.ptp(rows) + 1)
        if config.framing == "squash":
            assert aspect < 0.7  # squashed horizontally
        else:
            assert 0.85 < aspect < 1.15 and cols.mean() == pytest.approx(15.5, abs=1)  # the centre square
    augmented = cfg(size=32, framing="crop", crop_scale_min=0.5, flip=False, brightness=0.0)
    ds = ClipDataset(load_corpus([folder], augmented), augmented, "pair")
    centres = []
    for i in range(30):
        frames = ds[i]["frames"]
        assert frames.shape == (2, 3, 32, 32) and torch.equal(frames[0], frames[1])
        rows, cols = np.nonzero(frames[0, 0].numpy() > 127)
        if len(cols) and 0 < cols.min() and cols.max() < 31 and 0 < rows.min() and rows.max() < 31:
            assert 0.8 < (np.ptp(cols) + 1) / (np.ptp(rows) + 1) < 1.25  # whole disc in view: still round
        centres.append(cols.mean() if len(cols) else -1)
    assert np.ptp(centres) > 8  # windows at many positions across the wide frame


def test_squash_framing_crops_as_before(tmp_path):
    # the default keeps the samples of earlier runs: the whole frame resized to S x S, then a
    # square of side round(scale * S) at int(x0 * (S - side + 1)), resized back to S
    folder = tmp_path / "noise"
    folder.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (12, 40, 70, 3), dtype=np.uint8)
    for k, f in enumerate(noise):
        cv2.imwrite(str(folder / f"{k:03d}.png"), f)
    config = cfg(crop_scale_min=0.5, flip=False, brightness=0.0, seed=5)
    ds = ClipDataset(load_corpus([folder], config), config, "pair")
    for i in range(4):
        sample = ds[i]
        rng = np.random.default_rng([5, i, 1])  # the sample's augmentation stream (ClipDataset._rng)
        _, x0, y0 = rng.random(3)
        scale = rng.uniform(0.5, 1.0)
        side = int(round(scale * SIZE))
        x, y = int(x0 * (SIZE - side + 1)), int(y0 * (SIZE - side + 1))
        for k, index in enumerate(sample["frame_indices"].tolist()):
            squashed = cv2.resize(noise[index], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
            expected = cv2.resize(squashed[y:y + side, x:x + side], (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
            assert np.array_equal(sample["frames"][k].numpy().transpose(1, 2, 0), expected)


def test_lazy_frame_folders_match_preloaded(tmp_path):
    folder = write_frames(tmp_path / "seq", 30, ext=".jpg")
    eager, lazy = cfg(seed=3), cfg(seed=3, preload=False)
    a = ClipDataset(load_corpus([folder], eager), eager, "memory")
    b = ClipDataset(load_corpus([folder], lazy), lazy, "memory")
    assert a.corpus.nbytes > 0 and b.corpus.nbytes == 0
    for i in range(5):
        assert torch.equal(a[i]["frames"], b[i]["frames"])


def test_max_frames_per_video_caps_memory(video30):
    corpus = load_corpus(str(video30), cfg(max_frames_per_video=20))  # one path, not a list
    assert corpus.total_frames == 20 and corpus.nbytes == 20 * SIZE * SIZE * 3


# --------------------------------------------------------------------------------------------
# determinism


def test_same_seed_and_index_give_the_same_sample(video30, tmp_path):
    folder = write_frames(tmp_path / "seq", 30)
    config = cfg(seed=7)
    corpus = load_corpus([video30, folder], config)
    ds = ClipDataset(corpus, config, "memory")
    first = [ds[i] for i in (5, 900, 123456)]
    again = ClipDataset(load_corpus([video30, folder], config), config, "memory")
    for i, sample in zip((123456, 900, 5), reversed(first)):  # other order, other instance
        other = again[i]
        assert all(torch.equal(sample[k], other[k]) for k in sample)
    reseeded = ClipDataset(corpus, cfg(seed=8), "memory")
    assert any(not torch.equal(ds[i]["frames"], reseeded[i]["frames"]) for i in range(5))


def test_dataloader_workers_do_not_change_samples(video30):
    config = cfg(seed=1)
    ds = ClipDataset(load_corpus([video30], config), config, "pair")
    sampler = range(40, 52)  # a resumed run starts its sampler where it stopped
    batches = {}
    for workers, collate in ((0, None), (0, collate_clips), (2, collate_clips)):
        loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers, collate_fn=collate)
        batches[workers, collate] = list(loader)
    reference = batches[0, None]
    assert len(reference) == 3 and reference[0]["frames"].shape == (4, 2, 3, SIZE, SIZE)
    for other in batches.values():
        for a, b in zip(reference, other):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------
# configuration


@pytest.mark.parametrize("bad", [
    dict(size=30), dict(gap_min=0), dict(gap_min=5, gap_max=4), dict(n_short=6),
    dict(long_gap_min=9), dict(crop_scale_min=0.0), dict(brightness=1.5), dict(seed=-1),
])
def test_inconsistent_config_rejected(bad):
    with pytest.raises(DataConfigError):
        cfg(**bad)


def test_unknown_stage_rejected(video30):
    with pytest.raises(DataConfigError, match="stage"):
        build_dataset([video30], cfg(), "triple")


# --------------------------------------------------------------------------------------------
# the real raw-videos set


def test_raw_videos_set(data_dir):
    root = data_dir / "raw-videos"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    config = cfg(size=64, max_frames_per_video=20)
    corpus = load_corpus([root], config)
    assert len(corpus) == 34 and corpus.total_frames == 34 * 20
    assert sum(name.endswith(".mp4") for name in corpus.names) == 3
    for stage in ("pair", "memory"):
        sample = ClipDataset(corpus, config, stage)[0]
        assert sample["frames"].shape == (config.clip_length(stage), 3, 64, 64)
