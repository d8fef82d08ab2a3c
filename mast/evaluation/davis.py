"""DAVIS datasets: reading the folder layout, semi-supervised scoring, result CSVs (torch-free).

Layout of a DAVIS root (any image size; frame names need not start at ``00000``)::

    ROOT/JPEGImages/480p/<seq>/<frame>.jpg
    ROOT/Annotations/480p/<seq>/<frame>.png     palette PNGs (DAVIS-2017) or 0/255 grayscale (DAVIS-2016)

Results to score: ``RESULTS/<seq>/<frame>.png``, one mask per annotated frame (palette or 0/255).

Scoring follows the official semi-supervised protocol (``DAVISEvaluation._evaluate_semisupervised``
of ``davisvideochallenge/davis2017-evaluation``):

- the annotated frames of a sequence are its sorted annotation PNGs; the first and the last are
  not scored;
- the objects are ids ``1 .. K``, K = the largest id of the first annotation (ids that appear only
  later are not scored); the void value 255 of palette annotations is background;
- each object gets one row ``<seq>_<k>`` with J and F per frame and their Mean / Recall / Decay
  (:func:`mast.evaluation.metrics.db_statistics`); the global figures average over objects, and
  ``J&F-Mean`` is the mean of ``J-Mean`` and ``F-Mean``;
- a prediction holding an id above K is an error; an id of 1..K missing from a prediction is an
  empty mask for that object;
- DAVIS-2016 ground truth (grayscale 0/255, one object): any non-zero predicted id is the object.
"""
from __future__ import annotations

import csv
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from mast.core.errors import InputError
from mast.core.images import list_images
from mast.core.masks import read_mask
from mast.evaluation.metrics import db_eval_iou, db_statistics, f_measure

__all__ = [
    "DEFAULT_RESOLUTION",
    "VOID_ID",
    "GLOBAL_COLUMNS",
    "PER_SEQUENCE_COLUMNS",
    "DavisDataset",
    "ObjectScore",
    "EvaluationResult",
    "score_sequence",
    "evaluate_semisupervised",
    "write_global_csv",
    "write_per_sequence_csv",
    "write_csvs",
]

DEFAULT_RESOLUTION = "480p"
VOID_ID = 255
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
PER_SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")
GLOBAL_CSV = "global_results.csv"
PER_SEQUENCE_CSV = "per-sequence_results.csv"


def _is_grayscale_png(path: Path) -> bool:
    """True when the PNG is not a palette image (DAVIS-2016 style 0/255 grayscale)."""
    try:
        with Image.open(path) as im:
            return im.mode != "P"
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read mask {path}: {exc} (expected a PNG image)") from exc


def _read_annotation(path: Path) -> np.ndarray:
    """Ground-truth ids ``[H, W]`` uint8 with the void id 255 set to background (as the official code)."""
    ids = read_mask(path)
    if (ids == VOID_ID).any():
        ids = ids.copy()
        ids[ids == VOID_ID] = 0
    return ids


class DavisDataset:
    """A DAVIS folder: ``ROOT/JPEGImages/<resolution>/<seq>`` and ``ROOT/Annotations/<resolution>/<seq>``.

    Args:
        root: the DAVIS root.
        resolution: the resolution folder name (``480p``, ``Full-Resolution``, ...). When the default
            ``480p`` is absent and ``JPEGImages`` holds exactly one folder, that one is used.

    Raises InputError when the root or its ``JPEGImages/<resolution>`` / ``Annotations/<resolution>``
    folders are missing.
    """

    def __init__(self, root: str | Path, resolution: str = DEFAULT_RESOLUTION) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(
                f"DAVIS root not found: {self.root} (expected a folder holding JPEGImages/{resolution}/ "
                f"and Annotations/{resolution}/; check the --davis path)"
            )
        images = self.root / "JPEGImages"
        if not (images / resolution).is_dir() and resolution == DEFAULT_RESOLUTION and images.is_dir():
            subdirs = sorted(p.name for p in images.iterdir() if p.is_dir())
            if len(subdirs) == 1:
                resolution = subdirs[0]
        self.resolution = resolution
        for folder in (self.image_dir, self.annotation_dir):
            if not folder.is_dir():
                raise InputError(
                    f"DAVIS folder missing: {folder} (a DAVIS root holds JPEGImages/{resolution}/<seq>/*.jpg "
                    f"and Annotations/{resolution}/<seq>/*.png; check the --davis path)"
                )

    @property
    def image_dir(self) -> Path:
        return self.root / "JPEGImages" / self.resolution

    @property
    def annotation_dir(self) -> Path:
        return self.root / "Annotations" / self.resolution

    def sequences(self) -> list[str]:
        """Sorted names of the sequences (the folders of ``JPEGImages/<resolution>``)."""
        names = sorted(p.name for p in self.image_dir.iterdir() if p.is_dir())
        if not names:
            raise InputError(f"no sequences in {self.image_dir} (expected one folder of JPEG frames per sequence)")
        return names

    def select(self, names: Iterable[str] | None = None) -> list[str]:
        """The sequences to use: all of them when ``names`` is None or empty, else ``names`` checked.

        Duplicates are dropped, the given order is kept. InputError names any unknown sequence.
        """
        available = self.sequences()
        if not names:
            return available
        chosen = list(dict.fromkeys(names))
        known = set(available)
        unknown = [n for n in chosen if n not in known]
        if unknown:
            shown = ", ".join(available[:20]) + (", ..." if len(available) > 20 else "")
            raise InputError(
                f"unknown sequence(s) {', '.join(unknown)} in {self.image_dir} (available: {shown}; fix --sequences)"
            )
        return chosen

    def frame_paths(self, sequence: str) -> list[Path]:
        """The frames of a sequence in natural name order (:func:`mast.core.images.list_images`);
        InputError when there are none."""
        folder = self.image_dir / sequence
        frames = list_images(folder) if folder.is_dir() else []
        if not frames:
            raise InputError(f"sequence {sequence!r} has no frames: expected .jpg/.png images in {folder}")
        return frames

    def annotation_paths(self, sequence: str) -> list[Path]:
        """Sorted annotation PNGs of a sequence (the annotated frames); InputError when there are none."""
        folder = self.annotation_dir / sequence
        masks = sorted(folder.glob("*.png")) if folder.is_dir() else []
        if not masks:
            raise InputError(
                f"sequence {sequence!r} has no annotation: expected PNG masks in {folder} "
                f"(at least the first frame's mask; add them or leave the sequence out with --sequences)"
            )
        return masks

    def first_mask(self, sequence: str) -> np.ndarray:
        """Object ids ``[H, W]`` uint8 of the first annotated frame, void (255) set to background."""
        return _read_annotation(self.annotation_paths(sequence)[0])

    def is_binary(self, sequence: str) -> bool:
        """True for DAVIS-2016 style ground truth: a grayscale (non-palette) first mask with ids 0/1."""
        first = self.annotation_paths(sequence)[0]
        return _is_grayscale_png(first) and int(self.first_mask(sequence).max()) <= 1


@dataclass
class ObjectScore:
    """Scores of one object: per-frame J and F ``[T]`` over the scored frames, and their statistics."""

    sequence: str
    object_id: int
    frames: list[str]
    j: np.ndarray
    f: np.ndarray
    j_stats: tuple[float, float, float] = field(init=False)
    f_stats: tuple[float, float, float] = field(init=False)

    def __post_init__(self) -> None:
        self.j_stats = db_statistics(self.j)
        self.f_stats = db_statistics(self.f)

    @property
    def name(self) -> str:
        """The official row name ``<seq>_<k>``."""
        return f"{self.sequence}_{self.object_id}"

    @property
    def jf_mean(self) -> float:
        return (self.j_stats[0] + self.f_stats[0]) / 2


@dataclass
class EvaluationResult:
    """All object rows of an evaluation, in sequence order."""

    objects: list[ObjectScore]

    def global_figures(self) -> dict[str, float]:
        """The seven official global figures (fractions), keyed by :data:`GLOBAL_COLUMNS`."""
        if not self.objects:
            raise InputError("nothing to score: no object rows (select at least one annotated sequence)")
        j = np.array([o.j_stats for o in self.objects], np.float64)  # [n_objects, 3]: M, R, D
        f = np.array([o.f_stats for o in self.objects], np.float64)
        jm, jr, jd = j.mean(axis=0)
        fm, fr, fd = f.mean(axis=0)
        values = ((jm + fm) / 2, jm, jr, jd, fm, fr, fd)
        return {k: float(v) for k, v in zip(GLOBAL_COLUMNS, values)}

    def per_object_rows(self) -> list[tuple[str, float, float]]:
        """``(name, J-Mean, F-Mean)`` per object, as the official per-sequence table."""
        return [(o.name, o.j_stats[0], o.f_stats[0]) for o in self.objects]


def _result_path(results_dir: Path, sequence: str, frame: str) -> Path:
    return results_dir / sequence / f"{frame}.png"


def _scored_annotations(dataset: DavisDataset, sequence: str) -> list[Path]:
    annotations = dataset.annotation_paths(sequence)
    if len(annotations) < 3:
        raise InputError(
            f"sequence {sequence!r} has {len(annotations)} annotated frame(s) in {dataset.annotation_dir / sequence}: "
            f"scoring needs at least 3 (the first and the last are not scored)"
        )
    return annotations


def _check_results_present(dataset: DavisDataset, results_dir: Path, sequences: Sequence[str]) -> None:
    """Fail fast, before any scoring, on a missing results folder or result PNG."""
    scored = {seq: _scored_annotations(dataset, seq)[1:-1] for seq in sequences}  # dataset problems first
    if not results_dir.is_dir():
        raise InputError(f"results folder not found: {results_dir} (expected <seq>/<frame>.png masks; check --results)")
    for seq, frames in scored.items():
        for ann in frames:
            path = _result_path(results_dir, seq, ann.stem)
            if not path.is_file():
                raise InputError(
                    f"missing result mask {path} (expected one PNG per annotated frame, named like "
                    f"{ann.name} in {ann.parent}; first and last frame optional)"
                )


def score_sequence(dataset: DavisDataset, results_dir: str | Path, sequence: str) -> list[ObjectScore]:
    """Score the predictions ``results_dir/<sequence>/<frame>.png`` of one sequence.

    Returns one :class:`ObjectScore` per object id ``1..K`` of the first annotation.
    """
    results_dir = Path(results_dir)
    annotations = _scored_annotations(dataset, sequence)
    first = _read_annotation(annotations[0])
    n_objects = int(first.max())
    if n_objects == 0:
        raise InputError(
            f"first annotation {annotations[0]} holds no object (all background): nothing to score in {sequence!r}"
        )
    binary = _is_grayscale_png(annotations[0]) and n_objects == 1

    scored = annotations[1:-1]
    j = np.zeros((n_objects, len(scored)), np.float64)
    f = np.zeros((n_objects, len(scored)), np.float64)
    for t, ann_path in enumerate(scored):
        gt = _read_annotation(ann_path)
        pred_path = _result_path(results_dir, sequence, ann_path.stem)
        pred = read_mask(pred_path)
        if pred.shape != gt.shape:
            raise InputError(
                f"result mask {pred_path} is {pred.shape[1]}x{pred.shape[0]} (WxH) but its ground truth {ann_path} "
                f"is {gt.shape[1]}x{gt.shape[0]}: write masks at the annotation's size"
            )
        if binary:
            pred = (pred > 0).astype(np.uint8)
        else:
            top = int(pred.max())
            if top > n_objects:
                raise InputError(
                    f"result mask {pred_path} holds object id {top} but sequence {sequence!r} has {n_objects} "
                    f"object(s) (ids 1..{n_objects} in {annotations[0].name}): predictions may only use those ids"
                )
        for k in range(1, n_objects + 1):
            gt_k = gt == k
            pred_k = pred == k
            j[k - 1, t] = db_eval_iou(gt_k, pred_k)
            f[k - 1, t] = f_measure(pred_k, gt_k)

    frames = [p.stem for p in scored]
    return [ObjectScore(sequence, k + 1, frames, j[k], f[k]) for k in range(n_objects)]


def evaluate_semisupervised(
    davis_root: str | Path | DavisDataset,
    results_dir: str | Path,
    sequences: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Score a results folder against a DAVIS root (official semi-supervised protocol).

    Args:
        davis_root: the DAVIS root, or an opened :class:`DavisDataset`.
        results_dir: folder of ``<seq>/<frame>.png`` predictions.
        sequences: names to score; all sequences of the root when None or empty.
        progress: called with the sequence name after each scored sequence.

    Every selected sequence's annotations and result files are checked before scoring starts.
    """
    dataset = davis_root if isinstance(davis_root, DavisDataset) else DavisDataset(davis_root)
    results_dir = Path(results_dir)
    chosen = dataset.select(sequences)
    _check_results_present(dataset, results_dir, chosen)
    objects: list[ObjectScore] = []
    for seq in chosen:
        objects.extend(score_sequence(dataset, results_dir, seq))
        if progress is not None:
            progress(seq)
    return EvaluationResult(objects)


def _write_csv_atomic(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    """Write a CSV through a temporary file in the same folder, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _fmt(value: float) -> str:
    return "%.3f" % value


def write_global_csv(out_dir: str | Path, result: EvaluationResult) -> Path:
    """``OUT/global_results.csv``: the seven global figures as fractions, ``%.3f``."""
    figures = result.global_figures()
    row = [_fmt(figures[c]) for c in GLOBAL_COLUMNS]
    return _write_csv_atomic(Path(out_dir) / GLOBAL_CSV, GLOBAL_COLUMNS, [row])


def write_per_sequence_csv(out_dir: str | Path, result: EvaluationResult) -> Path:
    """``OUT/per-sequence_results.csv``: one row ``<seq>_<k>`` per object with J-Mean and F-Mean."""
    rows = [(name, _fmt(jm), _fmt(fm)) for name, jm, fm in result.per_object_rows()]
    return _write_csv_atomic(Path(out_dir) / PER_SEQUENCE_CSV, PER_SEQUENCE_COLUMNS, rows)


def write_csvs(out_dir: str | Path, result: EvaluationResult) -> tuple[Path, Path]:
    """Write both official CSVs into ``out_dir`` (created when missing); returns their paths."""
    return write_global_csv(out_dir, result), write_per_sequence_csv(out_dir, result)
