"""No two top-level classes in ``mast/`` share a name (issue 24: a reader, or ``from ... import``,
must never have to ask which ``EngineConfig`` or ``VideoSource`` is meant)."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mast"


def top_level_classes(root: Path) -> dict[str, list[str]]:
    """Class name -> the files (relative to ``root``'s parent) defining it at module level."""
    where: dict[str, list[str]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                where[node.name].append(str(path.relative_to(root.parent)))
    return where


def test_the_walk_sees_the_package() -> None:
    classes = top_level_classes(PACKAGE)
    assert "TrtBuildConfig" in classes and "Engine" in classes   # the walk reaches mast/export and mast/runtime


def test_no_two_classes_share_a_name() -> None:
    duplicates = {name: files for name, files in top_level_classes(PACKAGE).items() if len(files) > 1}
    assert not duplicates, "classes defined more than once in mast/ (rename one): " + "; ".join(
        f"{name} in {', '.join(files)}" for name, files in sorted(duplicates.items()))


def test_a_duplicate_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("class Same:\n    pass\n\n\nclass Other:\n    pass\n")
    (pkg / "sub" / "b.py").write_text("class Same:\n    class Inner:\n        pass\n")
    found = top_level_classes(pkg)
    assert found["Same"] == ["pkg/a.py", "pkg/sub/b.py"] and "Inner" not in found
