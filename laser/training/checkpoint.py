"""Atomic, verifiable checkpoints.

A checkpoint is a folder ``ckpt-<global step, 8 digits>`` written as: temporary folder ->
files, each fsynced -> ``manifest.json`` (sizes and sha256 of every file) written last ->
rename into place -> fsync of the parent. Resume takes the newest folder whose manifest
verifies; broken ones are reported and skipped; leftover temporary folders are removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

PREFIX, TMP_PREFIX, MANIFEST = "ckpt-", ".tmp-ckpt-", "manifest.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(root: str | Path, global_step: int, writers: dict[str, Callable[[Path], None]],
                     keep_last: int = 2) -> Path:
    """Write files atomically into ``root/ckpt-<step>``; returns the final folder.

    Args:
        root: the run's checkpoint folder.
        global_step: completed steps; names the folder.
        writers: file name -> function writing that file at the given path.
        keep_last: how many verified checkpoints to keep (older ones are deleted).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{global_step:08d}"
    tmp = root / f"{TMP_PREFIX}{global_step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    files = {}
    for name, write in writers.items():
        write(tmp / name)
        _fsync(tmp / name)
        files[name] = {"size": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
    (tmp / MANIFEST).write_text(json.dumps({"global_step": global_step, "files": files}, indent=1))
    _fsync(tmp / MANIFEST)
    _fsync(tmp)
    if final.exists():  # a re-run of the same step (e.g. after resume): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync(root)
    prune(root, keep_last)
    return final


def verify(folder: Path) -> str | None:
    """None when ``folder`` is a complete checkpoint, else the reason it is not."""
    manifest = folder / MANIFEST
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        return f"manifest unreadable ({exc.__class__.__name__}: {exc})"
    for name, info in meta.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            return f"{name} missing"
        if path.stat().st_size != info["size"]:
            return f"{name} has {path.stat().st_size} bytes, manifest says {info['size']}"
        if _sha256(path) != info["sha256"]:
            return f"{name} sha256 mismatch"
    return None


def find_latest(root: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest verified checkpoint under ``root`` and the broken ones skipped on the way.

    Leftover temporary folders (a write interrupted before its rename) are removed.
    """
    root = Path(root)
    if not root.is_dir():
        return None, []
    for tmp in root.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(tmp, ignore_errors=True)
    skipped = []
    for folder in sorted(root.glob(f"{PREFIX}*"), reverse=True):
        reason = verify(folder)
        if reason is None:
            return folder, skipped
        skipped.append((folder, reason))
    return None, skipped


def prune(root: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints."""
    folders = sorted(root.glob(f"{PREFIX}*"))
    for old in folders[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
