"""The bags of an archive: folders, files, globs and list files to unique output names.

Split from the rest of :mod:`seg_perception.offline.fleet`: :func:`expand_inputs` turns
what a user names (bag folders, ``.mcap``/``.db3`` files, folders of bags searched
recursively, globs, text files listing any of these) into :class:`BagInput` records, each
bag once, refusing two bags with one output name rather than renaming either.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from seg_perception.offline.fleet.outdir import RESERVED_NAMES, FleetError

BAG_SUFFIXES = (".mcap", ".db3")


@dataclass(frozen=True)
class BagInput:
    """One bag of the archive: output name (``DIR/<name>``), absolute path, size in bytes."""

    name: str
    path: Path
    size: int


def is_bag_dir(path: Path) -> bool:
    return (path / "metadata.yaml").is_file()


def bag_size(path: Path) -> int:
    """Bytes of a bag (every file of a bag directory)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


def _bag_name(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def _find_bags(folder: Path, exclude: Sequence[Path]) -> list[Path]:
    """Bags under a folder that is not a bag: directories with metadata.yaml (not descended
    into) and loose .mcap/.db3 files, recursively, skipping hidden folders and ``exclude``."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        keep = []
        for d in sorted(dirs):
            sub = here / d
            if d.startswith(".") or any(_same(sub, e) for e in exclude):
                continue
            if is_bag_dir(sub):
                found.append(sub)
            else:
                keep.append(d)
        dirs[:] = keep
        found.extend(here / f for f in files if Path(f).suffix in BAG_SUFFIXES)
    return sorted(found)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _read_list(path: Path) -> list[str]:
    """Entries of a list file: one per line, blank lines and ``#`` comments skipped,
    relative entries relative to the list file's folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetError(f"{path} is neither a bag (.mcap/.db3, a folder with metadata.yaml) "
                         f"nor a text file listing bags: {exc}") from exc
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entry = Path(os.path.expanduser(line))
        entries.append(str(entry if entry.is_absolute() else path.parent / entry))
    return entries


def _expand_one(entry: str, exclude: Sequence[Path], in_list: bool) -> list[Path]:
    path = Path(os.path.expanduser(entry))
    if not path.exists():
        if glob.has_magic(entry):
            matches = sorted(glob.glob(os.path.expanduser(entry), recursive=True))
            if not matches:
                raise FleetError(f"{entry}: no file or folder matches")
            out: list[Path] = []
            for match in matches:
                out.extend(_expand_one(match, exclude, in_list) if not glob.has_magic(match)
                           else [Path(match)])
            return out
        raise FleetError(f"input {entry} does not exist")
    if path.is_dir():
        return [path] if is_bag_dir(path) else _find_bags(path, exclude)
    if path.suffix in BAG_SUFFIXES:
        return [path]
    if in_list:
        raise FleetError(f"{entry}: a list file may name bags, folders and globs, not further "
                         "list files")
    out = []
    for item in _read_list(path):
        out.extend(_expand_one(item, exclude, in_list=True))
    return out


def expand_inputs(inputs: Iterable[str | Path], exclude: Sequence[Path] = ()) -> list[BagInput]:
    """Bags named by ``inputs``, in the order given, each once.

    An input is a bag directory (with ``metadata.yaml``), a ``.mcap``/``.db3`` file, a folder
    holding bags (searched recursively; ``exclude``, e.g. the output folder, is skipped), a
    glob (``'archive/2024-*/'``, ``**`` allowed) or a text file listing any of these, one a
    line. The output name is the bag directory's name or the file's stem; two bags with one
    name are refused (give them separate runs or output folders) rather than renamed, so a
    bag keeps its name from run to run. Raises :class:`FleetError`.
    """
    seen: dict[Path, None] = {}
    for entry in inputs:
        for path in _expand_one(str(entry), exclude, in_list=False):
            seen.setdefault(path.absolute(), None)
    if not seen:
        raise FleetError("no bags found in the inputs (bag folders hold metadata.yaml; bag "
                         "files end in .mcap or .db3)")
    bags: list[BagInput] = []
    by_name: dict[str, Path] = {}
    for path in seen:
        name = _bag_name(path)
        if name in RESERVED_NAMES or name.startswith("."):
            raise FleetError(f"bag {path}: its output name {name!r} is reserved; rename it")
        if name in by_name:
            raise FleetError(f"bags {by_name[name]} and {path} would both write to <out>/{name}; "
                             "process them in separate runs (or --out folders)")
        by_name[name] = path
        bags.append(BagInput(name, path, bag_size(path)))
    return bags


__all__ = [
    "BAG_SUFFIXES",
    "BagInput",
    "bag_size",
    "expand_inputs",
    "is_bag_dir",
]
