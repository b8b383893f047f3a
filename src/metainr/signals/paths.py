"""Where data lives and how user-given data paths are resolved and listed.

The shared data folder defaults to ``../shared/data`` relative to the current working directory
(the repository root during development) and can be moved with the ``METAINR_DATA`` environment
variable. A relative ``--data`` path is tried against the working directory first and then against
the data root, so ``--data celeba`` works from the repository root.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from metainr.errors import DataError

DATA_ENV = "METAINR_DATA"
LIST_EXTENSIONS = (".txt",)


def data_root() -> Path:
    """The shared data folder: ``$METAINR_DATA`` if set, else ``../shared/data`` (may not exist)."""
    env = os.environ.get(DATA_ENV)
    root = Path(env).expanduser() if env else Path("../shared/data")
    return root.resolve()


def resolve_data_path(path: str | Path) -> Path:
    """An existing path for ``path``: as given, else relative to the cwd, else under ``data_root()``."""
    p = Path(path).expanduser()
    if p.exists():
        return p.resolve()
    if not p.is_absolute():
        under_root = data_root() / p
        if under_root.exists():
            return under_root.resolve()
        raise DataError(f"data path not found: {path} (looked in {Path.cwd()} and {data_root()})")
    raise DataError(f"data path not found: {path}")


def _has_extension(path: Path, extensions: Iterable[str]) -> bool:
    # Case-insensitive: ImageNet ships '.JPEG'.
    return path.suffix.lower() in tuple(extensions)


def list_files(path: str | Path, extensions: Iterable[str], kind: str) -> list[Path]:
    """Files of the given extensions from a folder (recursive), a single file, or a ``.txt`` list.

    Folders are searched recursively and sorted by their path relative to the folder; hidden files
    (e.g. macOS ``._x.jpg``) and other extensions (``SOURCE.md``, ``index.csv``) are skipped. A list
    file holds one path per line, relative to the list's own folder; blank lines and ``#`` comments
    are ignored. ``kind`` ("images", "audio files") only words the error messages.
    """
    extensions = tuple(e.lower() for e in extensions)
    root = resolve_data_path(path)
    if root.is_dir():
        files = sorted(
            (f for f in root.rglob("*")
             if f.is_file() and _has_extension(f, extensions)
             and not any(part.startswith(".") for part in f.relative_to(root).parts)),
            key=lambda f: f.relative_to(root).as_posix(),
        )
    elif _has_extension(root, LIST_EXTENSIONS):
        files = _read_list(root, extensions, kind)
    elif _has_extension(root, extensions):
        files = [root]
    else:
        raise DataError(f"not a folder, list (.txt) or one of {', '.join(extensions)}: {root}")
    if not files:
        raise DataError(f"no {kind} found in {root}")
    return files


def _read_list(list_file: Path, extensions: tuple[str, ...], kind: str) -> list[Path]:
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read list {list_file}: {e}") from e
    files = []
    for lineno, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        f = Path(entry).expanduser()
        if not f.is_absolute():
            f = list_file.parent / f
        if not f.is_file():
            raise DataError(f"{list_file}:{lineno}: file not found: {entry}")
        if not _has_extension(f, extensions):
            raise DataError(f"{list_file}:{lineno}: not one of the {kind} types {', '.join(extensions)}: "
                            f"{entry}")
        files.append(f.resolve())
    return files


def item_names(files: list[Path], path: str | Path) -> list[str]:
    """Machine-independent ids for ``files`` listed from ``path``: posix paths relative to the folder
    (or the list's folder); used for hashing splits so they agree across machines."""
    root = resolve_data_path(path)
    base = root if root.is_dir() else root.parent
    names = []
    for f in files:
        try:
            names.append(f.resolve().relative_to(base).as_posix())
        except ValueError:  # a list entry outside the list's folder
            names.append(f.name)
    if len(set(names)) != len(names):
        # Only possible for list entries outside the folder sharing a name; ids must be unique.
        names = [f.resolve().as_posix() for f in files]
    return names
