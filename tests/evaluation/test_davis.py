"""DAVIS folder reader, semi-supervised scoring and CSV writers on small synthetic datasets."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from mast.core.errors import InputError
from mast.core.masks import write_mask
from mast.evaluation.davis import (
    GLOBAL_COLUMNS,
    DavisDataset,
    evaluate_semisupervised,
    write_csvs,
)
from mast.evaluation.metrics import db_eval_iou, f_measure

H, W = 40, 60
FIRST = 10  # frame names need not start at 00000


def frame_name(i: int) -> str:
    return f"{FIRST + i:05d}"


def two_objects(t: int) -> np.ndarray:
    """Ids [H, W]: object 1 a box drifting right, object 2 a fixed box."""
    ids = np.zeros((H, W), np.uint8)
    ids[5:15, 5 + t : 15 + t] = 1
    ids[25:35, 40:50] = 2
    return ids


def make_davis(root: Path, seqs: dict[str, list[np.ndarray]], binary: bool = False) -> Path:
    """Write a DAVIS layout: JPEG frames + palette (or 0/255 grayscale) annotations."""
    for seq, masks in seqs.items():
        img_dir = root / "JPEGImages" / "480p" / seq
        ann_dir = root / "Annotations" / "480p" / seq
        img_dir.mkdir(parents=True)
        ann_dir.mkdir(parents=True)
        for i, ids in enumerate(masks):
            cv2.imwrite(str(img_dir / f"{frame_name(i)}.jpg"), np.full((*ids.shape, 3), 40 * (i % 5), np.uint8))
            if binary:
                Image.fromarray((ids > 0).astype(np.uint8) * 255, mode="L").save(ann_dir / f"{frame_name(i)}.png")
            else:
                write_mask(ann_dir / f"{frame_name(i)}.png", ids)
    return root


def write_results(folder: Path, seq: str, masks: list[np.ndarray], frames: range | None = None) -> Path:
    out = folder / seq
    out.mkdir(parents=True, exist_ok=True)
    for i in frames if frames is not None else range(len(masks)):
        write_mask(out / f"{frame_name(i)}.png", masks[i])
    return folder


@pytest.fixture
def davis(tmp_path: Path) -> Path:
    return make_davis(tmp_path / "DAVIS", {"aaa": [two_objects(t) for t in range(6)], "bbb": [two_objects(0)] * 4})


# ---------------------------------------------------------------- reader


def test_reader_lists_sequences_frames_annotations(davis: Path):
    ds = DavisDataset(davis)
    assert ds.sequences() == ["aaa", "bbb"]
    frames = ds.frame_paths("aaa")
    assert [p.name for p in frames] == [f"{frame_name(i)}.jpg" for i in range(6)]
    assert [p.stem for p in ds.annotation_paths("bbb")] == [frame_name(i) for i in range(4)]
    np.testing.assert_array_equal(ds.first_mask("aaa"), two_objects(0))
    assert not ds.is_binary("aaa")
    assert ds.select(None) == ["aaa", "bbb"]
    assert ds.select(["bbb", "bbb"]) == ["bbb"]


def test_reader_other_resolution_folder(tmp_path: Path):
    root = make_davis(tmp_path / "D", {"s": [two_objects(0)] * 3})
    for kind in ("JPEGImages", "Annotations"):
        (root / kind / "480p").rename(root / kind / "Full-Resolution")
    ds = DavisDataset(root)
    assert ds.resolution == "Full-Resolution" and ds.sequences() == ["s"]


def test_missing_root_and_folders(tmp_path: Path, davis: Path):
    with pytest.raises(InputError, match="DAVIS root not found"):
        DavisDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="JPEGImages"):
        DavisDataset(tmp_path / "empty")
    (davis / "Annotations" / "480p").rename(davis / "Annotations" / "old")
    with pytest.raises(InputError, match=r"Annotations.480p"):
        DavisDataset(davis)


def test_unknown_sequence(davis: Path):
    with pytest.raises(InputError, match="unknown sequence.*zzz.*available: aaa, bbb"):
        DavisDataset(davis).select(["aaa", "zzz"])


def test_sequence_without_annotation(davis: Path, tmp_path: Path):
    (davis / "JPEGImages" / "480p" / "ccc").mkdir()
    cv2.imwrite(str(davis / "JPEGImages" / "480p" / "ccc" / "00000.jpg"), np.zeros((H, W, 3), np.uint8))
    results = write_results(tmp_path / "res", "aaa", [two_objects(t) for t in range(6)])
    with pytest.raises(InputError, match="sequence 'ccc' has no annotation"):
        evaluate_semisupervised(davis, results)
    # selecting only annotated sequences is fine
    assert len(evaluate_semisupervised(davis, results, ["aaa"]).objects) == 2


# ---------------------------------------------------------------- scoring


def test_perfect_results_score_one_and_first_last_are_not_read(davis: Path, tmp_path: Path):
    masks = [two_objects(t) for t in range(6)]
    results = write_results(tmp_path / "res", "aaa", masks, frames=range(1, 5))  # no first / last frame
    result = evaluate_semisupervised(davis, results, ["aaa"])
    assert [o.name for o in result.objects] == ["aaa_1", "aaa_2"]
    assert result.objects[0].frames == [frame_name(i) for i in range(1, 5)]
    for o in result.objects:
        np.testing.assert_array_equal(o.j, np.ones(4))
        np.testing.assert_array_equal(o.f, np.ones(4))
    assert result.global_figures() == {
        "J&F-Mean": 1.0, "J-Mean": 1.0, "J-Recall": 1.0, "J-Decay": 0.0,
        "F-Mean": 1.0, "F-Recall": 1.0, "F-Decay": 0.0,
    }


def test_missing_id_is_an_empty_mask(davis: Path, tmp_path: Path):
    # object 2 never predicted -> J = F = 0 on every frame; object 1 perfect
    masks = [np.where(two_objects(t) == 2, 0, two_objects(t)).astype(np.uint8) for t in range(6)]
    results = write_results(tmp_path / "res", "aaa", masks)
    g = evaluate_semisupervised(davis, results, ["aaa"]).global_figures()
    assert g["J-Mean"] == 0.5 and g["F-Mean"] == 0.5 and g["J&F-Mean"] == 0.5
    assert g["J-Recall"] == 0.5 and g["J-Decay"] == 0.0


def test_scores_match_metric_functions_per_frame(davis: Path, tmp_path: Path):
    # predictions: object 1 lagging one frame behind, object 2 shifted 2 px down
    preds = []
    for t in range(6):
        ids = np.zeros((H, W), np.uint8)
        ids[5:15, 5 + max(t - 1, 0) : 15 + max(t - 1, 0)] = 1
        ids[27:37, 40:50] = 2
        preds.append(ids)
    results = write_results(tmp_path / "res", "aaa", preds)
    objs = evaluate_semisupervised(davis, results, ["aaa"]).objects
    for k, obj in enumerate(objs, start=1):
        for i, t in enumerate(range(1, 5)):
            gt_k, pr_k = two_objects(t) == k, preds[t] == k
            assert obj.j[i] == pytest.approx(db_eval_iou(gt_k, pr_k))
            assert obj.f[i] == pytest.approx(f_measure(pr_k, gt_k))
    # object 1: 10x10 boxes shifted by 1 column -> J = 90 / 110 on every scored frame
    np.testing.assert_allclose(objs[0].j, 90 / 110)
    # object 2: shifted by 2 rows -> 80 / 120
    np.testing.assert_allclose(objs[1].j, 80 / 120)


def test_prediction_with_extra_id_is_an_error(davis: Path, tmp_path: Path):
    masks = [two_objects(t) for t in range(6)]
    masks[2] = masks[2].copy()
    masks[2][0, 0] = 3
    results = write_results(tmp_path / "res", "aaa", masks)
    with pytest.raises(InputError, match=r"holds object id 3 but sequence 'aaa' has 2 object"):
        evaluate_semisupervised(davis, results, ["aaa"])


def test_void_and_later_ids_in_ground_truth(tmp_path: Path):
    # GT: 255 (void) border is background; id 3 appearing at frame 2 is not scored (K from frame 0)
    gts = []
    for t in range(5):
        ids = two_objects(t)
        ids[0, :] = 255
        if t >= 2:
            ids[36:40, 0:4] = 3
        gts.append(ids)
    root = make_davis(tmp_path / "D", {"v": gts})
    preds = [np.where(g >= 3, 0, g).astype(np.uint8) for g in gts]  # predicts neither void nor id 3
    results = write_results(tmp_path / "res", "v", preds)
    result = evaluate_semisupervised(root, results)
    assert [o.name for o in result.objects] == ["v_1", "v_2"]
    assert result.global_figures()["J&F-Mean"] == 1.0


def test_binary_ground_truth_counts_any_predicted_id(tmp_path: Path):
    gts = [(two_objects(t) > 0).astype(np.uint8) for t in range(5)]
    root = make_davis(tmp_path / "D", {"b": gts}, binary=True)
    assert DavisDataset(root).is_binary("b")
    preds = [two_objects(t) for t in range(5)]  # ids 1 and 2 both count as the one object
    results = write_results(tmp_path / "res", "b", preds)
    result = evaluate_semisupervised(root, results)
    assert [o.name for o in result.objects] == ["b_1"]
    assert result.global_figures()["J&F-Mean"] == 1.0


def test_missing_result_png(davis: Path, tmp_path: Path):
    results = write_results(tmp_path / "res", "aaa", [two_objects(t) for t in range(6)], frames=range(0, 3))
    with pytest.raises(InputError, match=rf"missing result mask .*aaa.{frame_name(3)}\.png"):
        evaluate_semisupervised(davis, results, ["aaa"])
    with pytest.raises(InputError, match="results folder not found"):
        evaluate_semisupervised(davis, tmp_path / "nothing", ["aaa"])


def test_wrong_size_mask(davis: Path, tmp_path: Path):
    masks = [two_objects(t) for t in range(6)]
    masks[2] = masks[2][:, :-1]  # one pixel narrower
    results = write_results(tmp_path / "res", "aaa", masks)
    with pytest.raises(InputError) as info:
        evaluate_semisupervised(davis, results, ["aaa"])
    msg = str(info.value)
    assert f"{frame_name(2)}.png" in msg and "59x40" in msg and "60x40" in msg and "\n" not in msg


def test_unreadable_result_mask(davis: Path, tmp_path: Path):
    results = write_results(tmp_path / "res", "aaa", [two_objects(t) for t in range(6)])
    (results / "aaa" / f"{frame_name(3)}.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputError, match=rf"cannot read mask .*{frame_name(3)}\.png"):
        evaluate_semisupervised(davis, results, ["aaa"])


def test_too_few_annotated_frames(tmp_path: Path):
    root = make_davis(tmp_path / "D", {"short": [two_objects(0)] * 2})
    results = write_results(tmp_path / "res", "short", [two_objects(0)] * 2)
    with pytest.raises(InputError, match="at least 3"):
        evaluate_semisupervised(root, results)


def test_progress_callback(davis: Path, tmp_path: Path):
    results = write_results(tmp_path / "res", "aaa", [two_objects(t) for t in range(6)])
    write_results(results, "bbb", [two_objects(0)] * 4)
    seen: list[str] = []
    evaluate_semisupervised(davis, results, progress=seen.append)
    assert seen == ["aaa", "bbb"]


# ---------------------------------------------------------------- CSVs


def test_csv_writers(davis: Path, tmp_path: Path):
    masks = [np.where(two_objects(t) == 2, 0, two_objects(t)).astype(np.uint8) for t in range(6)]
    results = write_results(tmp_path / "res", "aaa", masks)
    write_results(results, "bbb", [two_objects(0)] * 4)
    result = evaluate_semisupervised(davis, results)
    out = tmp_path / "csv" / "nested"
    g_path, s_path = write_csvs(out, result)
    assert sorted(p.name for p in out.iterdir()) == ["global_results.csv", "per-sequence_results.csv"]  # no temp left
    with open(g_path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(GLOBAL_COLUMNS)
    # 4 objects: aaa_1, bbb_1, bbb_2 perfect, aaa_2 all zero -> means 0.75, recall 0.75, decay 0
    assert rows[1] == ["0.750", "0.750", "0.750", "0.000", "0.750", "0.750", "0.000"]
    with open(s_path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows == [
        ["Sequence", "J-Mean", "F-Mean"],
        ["aaa_1", "1.000", "1.000"],
        ["aaa_2", "0.000", "0.000"],
        ["bbb_1", "1.000", "1.000"],
        ["bbb_2", "1.000", "1.000"],
    ]
    # rewriting replaces the files
    write_csvs(out, result)
    assert len(list(out.iterdir())) == 2
