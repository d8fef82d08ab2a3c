"""Self-supervised training data over raw, unlabeled video.

Sources
    Video files (``.mp4 .avi .mkv .mov``, decoded with ``cv2.VideoCapture``) and frame folders (a
    folder of ``.jpg/.jpeg/.png`` frames, in natural name order: ``f2`` before ``f10``). A path given
    by the user may be a video file, a frame folder, or a folder holding videos and/or frame folders
    up to two levels down (``raw-videos/videos/*.mp4``, ``raw-videos/frames/<seq>/*.jpg``).

Decoding
    Every frame is resized once (``cv2.INTER_AREA``) and kept in memory as uint8 BGR:
    ``framing="squash"`` (default) resizes it to ``size x size`` whatever its aspect (455x256 ->
    256x256: objects get 1.8x narrower than at inference); ``framing="crop"`` keeps the aspect
    (short side = ``size``: 455x256 -> 455x256) and every sample takes a square window of it (see
    Augmentation), so shapes keep their proportions. 256x256: 192 KiB a frame; the whole
    ``raw-videos`` set, 2283 frames, is ~430 MB squashed.
    Measured on the 2-core dev CPU: reading a 455x256 JPEG + resize costs ~1 ms (854x480: ~3 ms),
    copying a preloaded frame ~7 us, so frame folders are preloaded by default too
    (``DataConfig.preload=False`` reads them lazily, for sets that do not fit in memory; videos are
    always decoded up front because seeking in compressed video is slow and inexact).
    ``max_frames_per_video`` caps memory. Corrupt, unreadable or too-short sources are skipped with
    one ``SkippedVideoWarning`` each; if none is usable, ``InputError`` names the paths given.

Sampling (``ClipDataset``; the choices, with the paper sections they follow)
    Stage ``"pair"`` (paper Sec. 4, "pretrain the network with a pair of input frames"): a reference
    frame r and a target t = r + g, g uniform in [gap_min, gap_max] (default 2..8). The paper
    reconstructs I_t from a nearby frame (Sec. 3.1, I_{t-1}); adjacent frames of 25-30 fps video
    are nearly identical, so, like the official implementation (which draws the pair interval from
    {2, 5, 8}), the gap spans 2..8 frames.

    Stage ``"memory"`` (Sec. 3.3 and 4): the clip imitates the inference memory at a random time.
    Inference reads long-term {I_0, I_5} and short-term {I_t-5, I_t-3, I_t-1} (Sec. 4). Here:
      * long-term: ``n_long`` (2) frames at distances D, D - 5, ... (``long_spacing`` = 5, the
        I_0 / I_5 spacing), D uniform in [long_gap_min, long_gap_max] = [16, 60], clipped to the
        video. D > 15 so that the oldest reference always goes through ROI localisation
        (Sec. 3.3.2: dilation ceil(d/15), used for distant frames; docs/DESIGN.md: d > 15) and D up to 60
        covers every dilation 2..4 the tracker uses; the second one (D - 5, 11..55) falls on either
        side of 15, as frame 5 does at inference;
      * short-term: ``n_short`` (3) distinct distances drawn from [short_gap_min, short_gap_max] =
        [1, 5], the range of the inference schedule (t-1, t-3, t-5 is one of the draws); random
        rather than fixed because the paper finds the exact choice of frames matters little while
        having both long and short memory is essential (Sec. 4, Table 5).
    Clip order: oldest first, target last: [long..., short..., target]. Long-term references are
    always older than short-term ones (``long_gap_min - (n_long-1)*long_spacing > short_gap_max``).

Augmentation (``augment=True``; one draw per sample, applied identically to all its frames)
    horizontal flip (p = 0.5), square crop of side fraction in [crop_scale_min, 1] of the frame's
    short side, at a uniform position, resized to ``size x size`` (bilinear), brightness gain in
    [1 - brightness, 1 + brightness] (rounded, saturated). With ``framing="crop"`` and no
    augmentation, the centre ``size x size`` square.

Output of ``ClipDataset[i]`` (a dict; batch it with ``DataLoader(..., collate_fn=collate_clips)``)
    ``frames``        uint8 tensor [T, 3, S, S], BGR, channels first; T = 2 (pair) or
                      n_long + n_short + 1 (memory); target last. The trainer converts with
                      ``frames.float() / 255`` (on the GPU when it has one) and then to Lab (model
                      code). uint8 because a DataLoader moves 4x fewer bytes: measured 3x more
                      samples/s through a DataLoader than float32 here; ``as_float=True`` gives
                      float32 in [0, 1] instead (exactly the uint8 values / 255).
    ``distances``     int64 [T - 1]: target index - reference index, in source frames (>= 1).
    ``frame_indices`` int64 [T]: indices of the frames in their source.
    ``video``         int64 scalar: index into ``corpus.names``.
    Sample i depends only on (config, i) and the corpus, not on the worker or call order.

Typical use (both stages share one decoded corpus)
    corpus = load_corpus(paths, config)
    pairs, clips = ClipDataset(corpus, config, "pair"), ClipDataset(corpus, config, "memory")
    loader = DataLoader(pairs, batch_size=24, sampler=range(first_sample, last_sample),
                        num_workers=2, collate_fn=collate_clips)
"""
from __future__ import annotations

from mast.training.data.augment import augment_clip, to_tensor
from mast.training.data.config import STAGES, DataConfig, DataConfigError, Framing, PathLike
from mast.training.data.corpus import VideoCorpus, load_corpus
from mast.training.data.decoding import ArrayFrames, LazyFolderFrames, decode_video, frame_shape, load_frame
from mast.training.data.sampling import ClipDataset, build_dataset, collate_clips, sample_memory_clip, sample_pair
from mast.training.data.sources import RawSource, SkippedVideoWarning, discover_sources

__all__ = [
    "STAGES", "ArrayFrames", "ClipDataset", "DataConfig", "DataConfigError", "Framing", "LazyFolderFrames",
    "PathLike", "RawSource", "SkippedVideoWarning", "VideoCorpus", "augment_clip", "build_dataset",
    "collate_clips", "decode_video", "discover_sources", "frame_shape", "load_corpus", "load_frame",
    "sample_memory_clip", "sample_pair", "to_tensor",
]
