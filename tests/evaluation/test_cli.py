"""``mast-eval``: official figures on the shipped data, error handling, tracking-mode wiring."""
from __future__ import annotations

import csv
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from mast.core.masks import read_mask, write_mask
from mast.evaluation.cli import app, parse_size, split_sequences

runner = CliRunner()
TOL = 0.05  # percentage points, against figures printed with one decimal


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def read_global(csv_dir: Path) -> dict[str, float]:
    """global_results.csv as percentages."""
    with open(csv_dir / "global_results.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert len(rows) == 2
    return {k: 100 * float(v) for k, v in zip(rows[0], rows[1])}


def read_per_sequence(csv_dir: Path) -> list[list[str]]:
    with open(csv_dir / "per-sequence_results.csv", newline="") as fh:
        return list(csv.reader(fh))


def assert_figures(got: dict[str, float], expected: dict[str, float]) -> None:
    for key, value in expected.items():
        assert abs(got[key] - value) <= TOL, f"{key}: got {got[key]:.2f}, expected {value}"


def copy_first_mask(root: Path, out: Path) -> Path:
    """Baseline: the first ground-truth mask written for every annotated frame."""
    for seq_dir in sorted((root / "Annotations" / "480p").iterdir()):
        pngs = sorted(seq_dir.glob("*.png"))
        first = read_mask(pngs[0])
        (out / seq_dir.name).mkdir(parents=True)
        for p in pngs:
            write_mask(out / seq_dir.name / p.name, first)
    return out


# ---------------------------------------------------------------- official figures on real data


def test_osvos_davis2016_val_dev(data_dir: Path, tmp_path: Path):
    root = data_dir / "davis2016-val-dev"
    res = run("--davis", root, "--results", root / "predictions-osvos", "--csv-dir", tmp_path)
    assert res.exit_code == 0, res.output
    assert_figures(
        read_global(tmp_path),
        {"J&F-Mean": 82.7, "J-Mean": 81.2, "F-Mean": 84.2, "J-Recall": 91.6, "F-Recall": 96.0,
         "J-Decay": 12.0, "F-Decay": 10.0},
    )
    rows = read_per_sequence(tmp_path)
    assert rows[0] == ["Sequence", "J-Mean", "F-Mean"]
    assert [r[0] for r in rows[1:]] == [
        "blackswan_1", "bmx-trees_1", "breakdance_1", "camel_1", "car-roundabout_1", "cows_1", "dog_1", "goat_1",
    ]
    # the summary table prints percentages with one decimal
    assert "82.7" in res.output and "81.2" in res.output and "84.2" in res.output


def test_osvos_multiobject_dev(data_dir: Path, tmp_path: Path):
    root = data_dir / "multiobject-dev"
    res = run("--davis", root, "--results", root / "predictions-osvos", "--csv-dir", tmp_path)
    assert res.exit_code == 0, res.output
    assert_figures(read_global(tmp_path), {"J&F-Mean": 86.3, "J-Mean": 82.6, "F-Mean": 90.0})
    assert [r[0] for r in read_per_sequence(tmp_path)[1:]] == [f"quad-{q}_{k}" for q in (1, 2) for k in (1, 2, 3, 4)]


@pytest.mark.parametrize("split, expected", [("davis2016-val-dev", 33.8), ("multiobject-dev", 45.8)])
def test_copy_first_mask_baseline(data_dir: Path, tmp_path: Path, split: str, expected: float):
    root = data_dir / split
    results = copy_first_mask(root, tmp_path / "copy")
    res = run("--davis", root, "--results", results)
    assert res.exit_code == 0, res.output
    assert_figures(read_global(results), {"J&F-Mean": expected})  # CSVs default to the results folder


# ---------------------------------------------------------------- synthetic data: options and errors

H, W = 24, 32


def make_davis(root: Path, seqs=("s1", "s2"), n: int = 4) -> Path:
    for seq in seqs:
        for kind in ("JPEGImages", "Annotations"):
            (root / kind / "480p" / seq).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / "JPEGImages" / "480p" / seq / f"{100 + i:05d}.jpg"), np.zeros((H, W, 3), np.uint8))
            ids = np.zeros((H, W), np.uint8)
            ids[4:12, 4 + i : 12 + i] = 1
            write_mask(root / "Annotations" / "480p" / seq / f"{100 + i:05d}.png", ids)
    return root


def copy_gt(root: Path, out: Path) -> Path:
    for seq_dir in (root / "Annotations" / "480p").iterdir():
        (out / seq_dir.name).mkdir(parents=True, exist_ok=True)
        for p in seq_dir.glob("*.png"):
            write_mask(out / seq_dir.name / p.name, read_mask(p))
    return out


def assert_one_line_error(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, res.output
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture
def davis(tmp_path: Path) -> Path:
    return make_davis(tmp_path / "DAVIS")


def test_perfect_synthetic_scores_100(davis: Path, tmp_path: Path):
    results = copy_gt(davis, tmp_path / "res")
    res = run("--davis", davis, "--results", results, "--csv-dir", tmp_path / "csv")
    assert res.exit_code == 0, res.output
    assert read_global(tmp_path / "csv")["J&F-Mean"] == 100.0
    assert "100.0" in res.output and "s1_1" in res.output and "Global" in res.output


@pytest.mark.parametrize(
    "seq_args",
    [["--sequences", "s2", "s1"], ["--sequences", "s2,s1"], ["--sequences", "s2", "--sequences", "s1"],
     ["--sequences", "s2 s1"]],
)
def test_sequences_forms(davis: Path, tmp_path: Path, seq_args):
    make_davis(davis, seqs=("s3",))
    results = copy_gt(davis, tmp_path / "res")
    res = run("--davis", davis, "--results", results, *seq_args)
    assert res.exit_code == 0, res.output
    assert [r[0] for r in read_per_sequence(results)[1:]] == ["s2_1", "s1_1"]


def test_split_and_size_parsing(davis: Path, tmp_path: Path):
    assert split_sequences(["a,b", "c d", "a"]) == ["a", "b", "c", "d"]
    assert split_sequences(None) == []
    assert parse_size("240x427") == (240, 427) and parse_size(None) is None
    assert_one_line_error(run("--davis", davis, "--out", tmp_path / "o", "--size", "big"), "--size 'big'", "HEIGHTxWIDTH")


def test_error_missing_folder(tmp_path: Path):
    assert_one_line_error(run("--davis", tmp_path / "nope", "--results", tmp_path), "DAVIS root not found", "nope")
    (tmp_path / "D" / "JPEGImages" / "480p").mkdir(parents=True)
    assert_one_line_error(run("--davis", tmp_path / "D", "--results", tmp_path), "Annotations")


def test_error_missing_results_folder(davis: Path, tmp_path: Path):
    assert_one_line_error(run("--davis", davis, "--results", tmp_path / "none"), "results folder not found")


def test_error_sequence_without_annotation(davis: Path, tmp_path: Path):
    results = copy_gt(davis, tmp_path / "res")
    for p in (davis / "Annotations" / "480p" / "s2").iterdir():
        p.unlink()
    assert_one_line_error(run("--davis", davis, "--results", results), "'s2' has no annotation")


def test_error_wrong_size_mask(davis: Path, tmp_path: Path):
    results = copy_gt(davis, tmp_path / "res")
    write_mask(results / "s1" / "00101.png", np.zeros((H - 1, W), np.uint8))
    assert_one_line_error(run("--davis", davis, "--results", results), "00101.png", f"{W}x{H - 1}", f"{W}x{H}")


def test_error_unreadable_image(davis: Path, tmp_path: Path):
    results = copy_gt(davis, tmp_path / "res")
    (results / "s2" / "00102.png").write_bytes(b"not a png at all")
    assert_one_line_error(run("--davis", davis, "--results", results), "cannot read mask", "00102.png")


def test_error_missing_result_png(davis: Path, tmp_path: Path):
    results = copy_gt(davis, tmp_path / "res")
    (results / "s1" / "00102.png").unlink()
    assert_one_line_error(run("--davis", davis, "--results", results), "missing result mask", "00102.png")


def test_error_option_misuse(davis: Path, tmp_path: Path):
    results = copy_gt(davis, tmp_path / "res")
    assert_one_line_error(run("--davis", davis, "--results", results, "--checkpoint", "x.pt"), "--checkpoint")
    assert_one_line_error(run("--davis", davis, "--results", results, "stray"), "stray")
    assert_one_line_error(run("--davis", davis, "--results", results, "--sequences", "nope"), "unknown sequence")
    assert_one_line_error(run("--davis", davis), "--out")


# ---------------------------------------------------------------- tracking mode (tracker stubbed)


def test_tracking_mode_calls_track_davis_then_scores(davis: Path, tmp_path: Path, monkeypatch):
    calls = []

    def track_davis(root, sequences, out_dir, checkpoint, keys, device, progress, label_offset=None, radius=None):
        calls.append((root, list(sequences), out_dir, checkpoint, keys, device, label_offset if radius is None else radius))
        for seq in sequences:
            pngs = sorted((root / "Annotations" / "480p" / seq).glob("*.png"))
            (out_dir / seq).mkdir(parents=True, exist_ok=True)
            for i, p in enumerate(pngs):
                write_mask(out_dir / seq / p.name, read_mask(pngs[0]))  # copy the first mask
                progress(seq, i + 1, len(pngs))
        return {seq: 0.01 for seq in sequences}

    fake = types.ModuleType("mast.evaluation.track")
    fake.track_davis = track_davis
    monkeypatch.setitem(sys.modules, "mast.evaluation.track", fake)

    out = tmp_path / "tracked"
    res = run("--davis", davis, "--out", out, "--keys", "lab", "--sequences", "s1", "--csv-dir", tmp_path / "csv")
    assert res.exit_code == 0, res.output
    assert calls == [(davis, ["s1"], out, None, "lab", "cpu", None)]   # None: the model's (1 at stride 4)
    assert sorted(p.name for p in (out / "s1").iterdir()) == [f"{100 + i:05d}.png" for i in range(4)]
    res = run("--davis", davis, "--out", out, "--sequences", "s1", "--label-offset", "0", "--csv-dir", tmp_path / "csv")
    assert res.exit_code == 0, res.output
    assert calls[-1][-1] == 0  # the published code's sampling point
    res = run("--davis", davis, "--out", out, "--sequences", "s1", "--radius", "8", "--csv-dir", tmp_path / "csv")
    assert res.exit_code == 0, res.output
    assert calls[-1][-1] == 8  # the attention window's radius reaches the tracker
    g = read_global(tmp_path / "csv")
    assert 0 < g["J&F-Mean"] < 100
    assert "s/frame" in res.output

    # --size needs a tracker that accepts it
    res = run("--davis", davis, "--out", out, "--size", "12x16")
    assert_one_line_error(res, "--size")
    # a missing checkpoint is reported before tracking
    assert_one_line_error(run("--davis", davis, "--out", out, "--checkpoint", tmp_path / "no.pt"), "checkpoint not found")


def test_precision_reaches_the_tracker_and_is_refused_where_it_does_not_apply(davis: Path, tmp_path: Path, monkeypatch):
    calls = []

    def track_davis(root, sequences, out_dir, checkpoint, keys, device, progress, precision="fp32"):
        calls.append(precision)
        for seq in sequences:
            pngs = sorted((root / "Annotations" / "480p" / seq).glob("*.png"))
            (out_dir / seq).mkdir(parents=True, exist_ok=True)
            for p in pngs:
                write_mask(out_dir / seq / p.name, read_mask(pngs[0]))
        return {seq: 0.01 for seq in sequences}

    fake = types.ModuleType("mast.evaluation.track")
    fake.track_davis = track_davis
    monkeypatch.setitem(sys.modules, "mast.evaluation.track", fake)
    out = tmp_path / "tracked"
    res = run("--davis", davis, "--out", out, "--sequences", "s1", "--precision", "bf16")
    assert res.exit_code == 0, res.output
    assert run("--davis", davis, "--out", out, "--sequences", "s1").exit_code == 0
    assert calls == ["bf16", "fp32"]
    results = copy_gt(davis, tmp_path / "res")
    assert_one_line_error(run("--davis", davis, "--results", results, "--precision", "bf16"), "--precision")
    assert_one_line_error(run("--davis", davis, "--results", results, "--label-offset", "0"), "--label-offset")
    assert_one_line_error(run("--davis", davis, "--results", results, "--radius", "8"), "--radius")
    assert_one_line_error(run("--davis", davis, "--out", out, "--model", tmp_path, "--precision", "fp16"),
                          "--precision")


# ---------------------------------------------------------------- scoring never imports torch


def test_scoring_mode_does_not_import_torch(davis: Path, tmp_path: Path):
    results = copy_gt(davis, tmp_path / "res")
    code = (
        "import sys\n"
        "from mast.evaluation.cli import main\n"
        "try:\n"
        f"    main(['--davis', {str(davis)!r}, '--results', {str(results)!r}])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "assert 'torch' not in sys.modules, 'scoring imported torch'\n"
        "print('ok-no-torch')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok-no-torch" in proc.stdout
    assert read_global(results)["J&F-Mean"] == 100.0
