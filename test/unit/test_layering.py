"""The package layout by role holds: each package imports only the layers below it.

runtime <- offline <- sim <- tools/training <- ros <- cli (see each package's docstring).
Imports are read from the source (relative ones resolved), including those inside
functions, so a lazy import cannot hide a dependency against the layering.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "seg_perception"

#: What each package may import from seg_perception (besides itself).
ALLOWED = {
    "runtime": set(),
    "offline": {"runtime"},
    "sim": {"runtime", "offline"},
    "training": {"runtime"},
    "tools": {"runtime", "offline", "sim", "training"},
    "ros": {"runtime", "offline", "sim", "tools"},
    "cli": {"runtime", "offline", "sim", "tools", "training", "ros"},
}
#: Third-party modules only ``ros`` may import.
ROS_ONLY = {"rclpy", "cv_bridge", "tf2_ros", "tf2_msgs", "rosidl_runtime_py", "launch",
            "launch_ros", "lifecycle_msgs", "diagnostic_msgs", "vision_msgs", "builtin_interfaces",
            "sensor_msgs", "nav_msgs", "geometry_msgs", "std_msgs", "rcl_interfaces"}


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``path``, relative imports resolved."""
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    package = parts[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((node.lineno, module))
            # ``from seg_perception import runtime`` names the package in the alias.
            if module == "seg_perception":
                out += [(node.lineno, f"seg_perception.{a.name}") for a in node.names]
    return out


def _violations(root: Path = PACKAGE) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        layer = rel.parts[0] if len(rel.parts) > 1 else None
        for line, module in _imports(path, root):
            top = module.split(".")[0]
            where = f"seg_perception/{rel}:{line} imports {module}"
            if top in ROS_ONLY and layer != "ros":
                bad.append(f"{where} (ROS is imported only under ros/)")
            if top != "seg_perception" or layer is None:
                continue
            target = module.split(".")[1] if module.count(".") else None
            if target is None or target == layer or target not in ALLOWED:
                continue
            if target not in ALLOWED.get(layer, set()):
                bad.append(f"{where} ({layer} may import {sorted(ALLOWED[layer]) or 'nothing'})")
    return bad


def test_every_package_has_a_known_role() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(ALLOWED), packages ^ set(ALLOWED)
    for name in ALLOWED:
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
        assert doc and "import" in doc, f"{name}/__init__.py should say what it may import"


def test_no_import_against_the_layering() -> None:
    assert _violations() == []


@pytest.mark.parametrize("source, expect", [
    ("from seg_perception.ros import node\n", "runtime may import nothing"),
    ("from ..offline import process\n", "runtime may import nothing"),
    ("def f():\n    import rclpy\n", "ROS is imported only under ros/"),
])
def test_the_check_catches_a_violation(tmp_path: Path, source: str, expect: str) -> None:
    """The checker itself flags a bad import (so an empty list above means something)."""
    fake = tmp_path / "seg_perception"
    for name in ALLOWED:
        (fake / name).mkdir(parents=True)
        (fake / name / "__init__.py").write_text('"""May import nothing."""\n')
    (fake / "runtime" / "bad.py").write_text(source)
    assert any(expect in v for v in _violations(fake))
