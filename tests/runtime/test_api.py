"""The Python front door (mast.runtime.api, re-exported by ``mast``): the README's example run for
real from another folder, ``import mast`` without side effects, the one tracker interface, the one
``--size`` rule."""
from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mast
from mast.core.errors import InputError
from mast.core.masks import read_mask
from mast.runtime.client import RemoteTracker
from mast.runtime.demo_clip import DEMO_MASK
from mast.runtime.tracker import ObjectTracker, Tracker, track, working_size

REPO = Path(__file__).resolve().parents[2]
PROTOCOL_METHODS = ("start", "step", "anchor", "close")


def readme_example() -> str:
    """The first ``python`` code block of README.md."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert blocks, "README.md has no ```python block"
    return blocks[0]


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_readme_example_runs_as_is_from_another_folder(tmp_path: Path) -> None:
    """The README's example, unchanged, in a fresh interpreter started in an empty folder; its masks
    are then checked against the clip's ground truth (the camel is followed)."""
    dump = tmp_path / "masks.npy"
    result = _python(readme_example() + f"\nimport numpy as np\nnp.save({str(dump)!r}, np.stack(masks))\n", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    masks = np.load(dump)
    truth_dir = DEMO_MASK.parent
    truth = np.stack([read_mask(p) for p in sorted(truth_dir.glob("*.png"))])
    assert masks.shape == truth.shape == (25, 240, 427) and masks.dtype == np.uint8
    assert np.array_equal(masks[0], truth[0])            # the first mask, as given
    ious = [(np.logical_and(m > 0, t > 0).sum() / np.logical_or(m > 0, t > 0).sum()) for m, t in zip(masks, truth)]
    assert min(ious) > 0.6, ious                          # README: mean 0.842, worst 0.772 (v5)
    assert set(np.unique(masks[1:])) <= {0, 1}


def test_import_mast_loads_neither_torch_nor_opencv(tmp_path: Path) -> None:
    code = ("import sys, json, mast; heavy = [m for m in ('torch', 'cv2', 'onnxruntime', 'mast.runtime') "
            "if m in sys.modules]; print(json.dumps([heavy, sorted(mast.__all__)]))")
    result = _python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    heavy, names = json.loads(result.stdout)
    assert heavy == []
    assert {"open_tracker", "demo_clip", "ObjectTracker", "connect_tracker", "track"} <= set(names)


def test_public_names_resolve_and_unknown_names_fail() -> None:
    for name in mast.__all__:
        assert getattr(mast, name) is not None
    assert mast.open_tracker.__module__ == "mast.runtime.api"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mast.nope  # noqa: B018


def test_demo_clip_shapes() -> None:
    frames, first = mast.demo_clip()
    assert len(frames) == 25 and all(f.shape == (240, 427, 3) and f.dtype == np.uint8 for f in frames)
    assert first.shape == (240, 427) and first.dtype == np.uint8 and set(np.unique(first)) == {0, 1}


def test_local_and_server_trackers_share_one_interface() -> None:
    """Both implement ObjectTracker with the same required parameters (the loop of mast-run and
    :func:`track` take either)."""
    for cls in (Tracker, RemoteTracker):
        for name in PROTOCOL_METHODS:
            wanted = inspect.signature(getattr(ObjectTracker, name)).parameters
            got = inspect.signature(getattr(cls, name)).parameters
            assert list(got)[: len(wanted)] == list(wanted), (cls, name)
            assert all(p.default is not inspect.Parameter.empty for p in list(got.values())[len(wanted):])


def test_track_on_a_local_tracker_with_lab_keys() -> None:
    """open_tracker with raw colour keys (no weights), at a working size: one mask per frame at the
    frame's size; an empty frame list is a one-line error."""
    frames, first = mast.demo_clip()
    with mast.open_tracker(backend="torch", keys="lab", size=(120, 214)) as tracker:
        assert isinstance(tracker, ObjectTracker) and tracker.size == (120, 214)
        masks = list(track(tracker, frames[:4], first))
        with pytest.raises(InputError, match="no frame to track"):
            list(tracker.track([], first))
    assert len(masks) == 4 and all(m.shape == (240, 427) for m in masks)
    assert np.array_equal(masks[0], first) and all(set(np.unique(m)) <= {0, 1} for m in masks)


class _FixedSizeBackend:
    """What the tracker reads of an exported model's backend before any frame."""

    input_size = (96, 168)


def test_one_size_rule() -> None:
    assert working_size(None, None) is None
    assert working_size((240, 427), None) == (240, 427)
    assert working_size(None, (96, 168)) == (96, 168)
    assert working_size((96, 168), (96, 168)) == (96, 168)
    with pytest.raises(InputError, match=r"--size 240x427 but the model M was exported for 96x168.*drop --size"):
        working_size((240, 427), (96, 168), "M")
    with pytest.raises(InputError, match="exported for 96x168"):   # the tracker applies it too
        Tracker(_FixedSizeBackend(), size=(240, 427))
    assert Tracker(_FixedSizeBackend()).size == (96, 168)


def test_connect_tracker_needs_a_stream_id() -> None:
    with pytest.raises(InputError, match="--stream-id"):
        mast.connect_tracker("localhost:8001", "")
