"""``mast-train`` command line: user mistakes are one red line and status 2; stage 2 from stage 1."""
from __future__ import annotations

import importlib.util

import pytest

from mast.core.checkpoint import load_encoder
from mast.training.monitor import read_metrics

from .test_trainer import TINY, run_cli


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_one_line_error(result, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = error_lines(result.stderr)
    for word in words:
        assert word in line, line


def test_no_usable_video_is_a_one_line_error(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "broken.mp4").write_bytes(b"not a video at all" * 100)
    result = run_cli("--data", tmp_path / "data", "--out", tmp_path / "run", "--steps", "2", *TINY)
    assert_one_line_error(result, "no usable video")
    assert "warning: skipping" in result.stderr  # the corrupt file is named once


def test_missing_data_path_is_a_one_line_error(tmp_path):
    result = run_cli("--data", tmp_path / "nowhere", "--out", tmp_path / "run", "--steps", "2")
    assert_one_line_error(result, "does not exist")


def test_bad_init_checkpoint_is_a_one_line_error(texture_video, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    result = run_cli("--data", texture_video, "--out", tmp_path / "run", "--steps", "2", "--init", bad, *TINY)
    assert_one_line_error(result, "bad.pt")


def test_unknown_init_name_is_a_one_line_error_naming_the_priors(texture_video, tmp_path):
    result = run_cli("--data", texture_video, "--out", tmp_path / "run", "--steps", "2", "--init", "texture-prio", *TINY)
    assert_one_line_error(result, "texture-prio", "colour-prior", "texture-prior")
    assert "decoding" not in result.stderr  # refused before the corpus is read


def test_pair_then_memory_stage_then_guarded_out_folder(texture_video, tmp_path):
    pair = run_cli("--data", texture_video, "--out", tmp_path / "pair", "--steps", "2", *TINY)
    assert pair.returncode == 0, pair.stderr
    encoder = tmp_path / "pair" / "encoder.pt"
    load_encoder(encoder)  # official layout, loadable by mast-eval
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "pair" / "loss.png").stat().st_size > 1000

    memory = run_cli("--data", texture_video, "--out", tmp_path / "memory", "--steps", "2", "--stage", "memory",
                     "--init", encoder, "--size", "32", "--batch-size", "1")
    assert memory.returncode == 0, memory.stderr
    assert read_metrics(tmp_path / "memory" / "metrics.jsonl")[0]["lr"] == 2e-5  # the stage-2 default

    again = run_cli("--data", texture_video, "--out", tmp_path / "pair", "--steps", "2", *TINY)
    assert_one_line_error(again, "--resume")
    changed = run_cli("--data", texture_video, "--out", tmp_path / "pair", "--steps", "4", "--resume", "--size", "64")
    assert_one_line_error(changed, "size")
    missing = run_cli("--data", texture_video, "--out", tmp_path / "none", "--steps", "4", "--resume")
    assert_one_line_error(missing, "no checkpoint to resume")


@pytest.mark.parametrize("flag", ["--steps 0", "--size 30", "--cycle-weight -1", "--label-offset 4"])
def test_invalid_numbers_are_rejected(texture_video, tmp_path, flag):
    result = run_cli("--data", texture_video, "--out", tmp_path / "run", *(["--steps", "2"] if "steps" not in flag else []),
                     *flag.split())
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_plot_loss_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from mast.training.plot_loss import main, moving_average

    lines = [f'{{"step": {s}, "loss": {1.0 / s}, "lr": 0.001}}' for s in range(1, 31)]
    lines.append('{"step": 30, "val_jf": 0.4, "val_j": 0.4, "val_f": 0.4}')
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit) as done:
        main([str(tmp_path), "--smooth", "5"])
    assert done.value.code == 0
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert moving_average([1.0, 3.0, 5.0], 2).tolist() == [1.0, 2.0, 4.0]


def test_seed_texture_prior_and_stem_reach_the_run(texture_video, tmp_path):
    from mast.training.state import load_state

    result = run_cli("--data", texture_video, "--out", tmp_path / "run", "--steps", "1", "--seed", "3",
                     "--init", "texture-prior", "--batchnorm", "frozen", "--trainable", "stem",
                     "--cycle-weight", "0.01", "--label-offset", "2", *TINY)
    assert result.returncode == 0, result.stderr
    config = load_state(tmp_path / "run" / "last.pt")["config"]
    assert (config["seed"], config["init"], config["trainable"], config["cycle_weight"], config["label_offset"]) == (
        3, "texture-prior", "stem", 0.01, 2)
