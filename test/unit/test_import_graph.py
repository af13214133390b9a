"""The import graph: no cycles, config/pipeline load without torch or ROS, and stats, the image
codec and the MCAP prefix reader load no ROS package at run time (transitively too).

Which package may import which is checked in ``test_layering.py``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from shared_data import REPO

PKG = REPO / "seg_perception"


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, is_pkg: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def import_graph() -> dict[str, set[str]]:
    """Every import between the package's modules, function-level ones included.

    ``from . import x`` and ``from .x import y`` point at module ``x`` (or at ``x.y`` when
    that is a module); importing a package means its ``__init__``.
    """
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_pkg, node.level, node.module)
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub in modules else base)
            graph[name].update(t for t in targets if t in modules and t != name)
            # importing a.b.c runs package a.b's __init__ first: an edge to it, unless it is
            # a package the importer itself lives in (its __init__ importing its own
            # submodules is the usual package layout, not a cycle)
            for t in targets:
                parts = t.split(".")
                for k in range(2, len(parts)):
                    parent = ".".join(parts[:k])
                    if parent in modules and not (name == parent
                                                  or name.startswith(parent + ".")):
                        graph[name].add(parent)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    graph = import_graph()
    # the graph sees the edges that used to form cycles, so a regression shows up here
    assert "seg_perception.runtime.models.zoo" in graph["seg_perception.runtime.models.checkpoint"]
    assert "seg_perception.runtime.engine.onnx_backend" in graph[
        "seg_perception.runtime.engine.build"]
    assert cycles(graph) == []


def test_a_cycle_through_a_package_init_is_seen() -> None:
    """``from a.b.c import x`` runs ``a/b/__init__`` first; a cycle through it breaks the
    import of whichever module comes first, though no module names the other directly."""
    graph = import_graph()
    assert "seg_perception.runtime.config" in graph[
        "seg_perception.runtime.pipeline.cycle"]  # imports runtime.config (the package)
    assert "seg_perception.runtime.geometry" in graph[
        "seg_perception.runtime.config.snapshot"]  # imports runtime.geometry.camera


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_config_and_pipeline_load_without_torch_or_ros() -> None:
    code = ("import sys\n"
            "import seg_perception.runtime.config, seg_perception.runtime.pipeline\n"
            "import seg_perception.runtime.tf, seg_perception.runtime.messages\n"
            "print(sorted(m for m in ('torch', 'rclpy', 'cv_bridge') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_module_imports_stay_ros_free() -> None:
    code = ("import sys, seg_perception.runtime.stats, seg_perception.offline.mcap_prefix, "
            "seg_perception.runtime.image_codec; "
            "bad = [m for m in ('rclpy', 'sensor_msgs') if m in sys.modules]; "
            "sys.exit(bool(bad))")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(REPO), timeout=60).returncode \
        == 0
