"""The repository stands alone: no tracked file points outside it at the team's shared folder beside it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Built from parts so that this file does not match itself.
SHARED = ".." + "/" + "shared"
OUTSIDE = re.compile(re.escape(SHARED) + r"\b")


def _tracked_files() -> list[str]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if listing.returncode != 0:
        pytest.skip(f"not a git checkout: {listing.stderr.decode(errors='replace').strip()}")
    return [name for name in listing.stdout.decode().split("\0") if name]


def _is_data_table(name: str) -> bool:
    """The bundled dataset's tables and ground truth; its README (provenance) is still checked."""
    return name.startswith("data/") and not name.endswith(".md")


def _text(path: Path) -> str | None:
    """The file's text (a symbolic link's target), or None for a binary file (NUL bytes or not UTF-8) or one
    deleted in the work tree."""
    if path.is_symlink():
        return os.readlink(path)
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_no_tracked_file_refers_to_the_shared_folder() -> None:
    offending = []
    for name in _tracked_files():
        if _is_data_table(name) or (text := _text(ROOT / name)) is None:
            continue
        offending += [
            f"{name}:{number}: {line.strip()}"
            for number, line in enumerate(text.splitlines(), 1)
            if OUTSIDE.search(line)
        ]
    assert not offending, f"files refer to {SHARED}; the repository must stand alone:\n" + "\n".join(offending)
