"""Atomic, verifiable checkpoints, for the training loop and every routing engine.

A checkpoint is a folder ``ckpt-<global step, 8 digits>`` written as: temporary folder ->
files, each fsynced -> ``manifest.json`` (sizes and sha256 of every file) written last ->
rename into place -> fsync of the parent. Resume takes the newest folder whose manifest
verifies; broken ones are reported and skipped; leftover temporary folders are removed.

A write for a step that already has a checkpoint (the end-of-run save after an in-loop save of
the same step, or a re-run after resume) first renames the old folder aside to
``ckpt-<step>.replaced`` and deletes it only after the new folder is in place, so a kill at any
moment leaves at least one complete checkpoint of that step.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

PREFIX, TMP_PREFIX, MANIFEST, ASIDE = "ckpt-", ".tmp-ckpt-", "manifest.json", ".replaced"


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


def _step_of(folder: Path) -> int | None:
    """The global step in a checkpoint folder's name, None for a name that is not one."""
    digits = folder.name[len(PREFIX) : len(PREFIX) + 8]
    rest = folder.name[len(PREFIX) + 8 :]
    if not folder.name.startswith(PREFIX) or not digits.isdigit() or rest not in ("", ASIDE):
        return None
    return int(digits)


def _checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders, newest first; at equal step the primary folder before its aside copy."""
    found = [f for f in root.glob(f"{PREFIX}*") if _step_of(f) is not None]
    return sorted(found, key=lambda f: (_step_of(f), not f.name.endswith(ASIDE)), reverse=True)


def write_checkpoint(
    root: str | Path, global_step: int, writers: dict[str, Callable[[Path], None]], keep_last: int = 2
) -> Path:
    """Write files atomically into ``root/ckpt-<step>``; returns the final folder.

    Args:
        root: the run's checkpoint folder.
        global_step: completed steps; names the folder.
        writers: file name -> function writing that file at the given path.
        keep_last: how many checkpoints to keep (older ones are deleted).

    Returns:
        The checkpoint folder, complete and fsynced.
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
    aside = final.with_name(final.name + ASIDE)
    if final.exists():  # keep the old copy until the new one is in place (a kill may come between)
        shutil.rmtree(aside, ignore_errors=True)
        os.rename(final, aside)
    os.rename(tmp, final)
    _fsync(root)
    shutil.rmtree(aside, ignore_errors=True)
    prune(root, keep_last)
    return final


def verify(folder: Path, required: Iterable[str] = ()) -> str | None:
    """None when ``folder`` is a complete checkpoint, else the reason it is not.

    Args:
        folder: a checkpoint folder.
        required: file names the manifest must list (e.g. the trainer's state files).
    """
    manifest = Path(folder) / MANIFEST
    try:
        meta = json.loads(manifest.read_text())
        files = meta["files"]
        if not isinstance(files, dict) or not files:
            raise ValueError("no files listed")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"manifest unreadable ({exc.__class__.__name__}: {exc})"
    step = _step_of(Path(folder))
    if step is not None and meta.get("global_step") != step:
        return f"manifest is for step {meta.get('global_step')}, folder for step {step}"
    missing = sorted(set(required) - set(files))
    if missing:
        return f"manifest lacks {', '.join(missing)}"
    for name, info in files.items():
        path = Path(folder) / name
        if not path.is_file():
            return f"{name} missing"
        if path.stat().st_size != info["size"]:
            return f"{name} has {path.stat().st_size} bytes, manifest says {info['size']}"
        if _sha256(path) != info["sha256"]:
            return f"{name} sha256 mismatch"
    return None


def find_latest(root: str | Path, required: Iterable[str] = ()) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest verified checkpoint under ``root`` and the broken ones skipped on the way.

    Leftover temporary folders (a write interrupted before its rename) are removed.

    Args:
        root: the run's checkpoint folder.
        required: file names a usable checkpoint's manifest must list.

    Returns:
        ``(folder or None, [(broken folder, reason), ...])``.
    """
    root = Path(root)
    if not root.is_dir():
        return None, []
    for tmp in root.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(tmp, ignore_errors=True)
    skipped = []
    for folder in _checkpoints(root):
        reason = verify(folder, required)
        if reason is None:
            return folder, skipped
        skipped.append((folder, reason))
    return None, skipped


def prune(root: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints, and aside copies older than those kept."""
    primary = [f for f in _checkpoints(Path(root)) if not f.name.endswith(ASIDE)]
    for old in primary[keep_last:]:
        shutil.rmtree(old, ignore_errors=True)
    newest = _step_of(primary[0]) if primary else None
    for aside in Path(root).glob(f"{PREFIX}*{ASIDE}"):
        if newest is not None and _step_of(aside) is not None and _step_of(aside) <= newest:
            shutil.rmtree(aside, ignore_errors=True)


def _is_arrays(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, np.ndarray) for v in value.values())


def save_state(root: str | Path, step: int, state: dict, keep_last: int = 2) -> Path:
    """Write a state dict as checkpoint ``root/ckpt-<step>`` with :func:`write_checkpoint`.

    Args:
        state: name -> a dict of numpy arrays (written as ``name.npz``, no pickle) or a JSON-able
            value (``name.json``); None values are left out.

    Returns:
        The checkpoint folder.
    """
    writers = {}
    for name, value in state.items():
        if value is None:
            continue
        if _is_arrays(value):
            writers[f"{name}.npz"] = lambda p, v=value: _savez(p, v)
        else:
            writers[f"{name}.json"] = lambda p, v=value: p.write_text(json.dumps(v, indent=1))
    return write_checkpoint(root, step, writers, keep_last)


def read_state(folder: str | Path) -> dict:
    """Read back what :func:`save_state` wrote into ``folder``."""
    out = {}
    for path in sorted(Path(folder).iterdir()):
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                out[path.stem] = {k: z[k] for k in z.files}
        elif path.suffix == ".json" and path.name != MANIFEST:
            out[path.stem] = json.loads(path.read_text())
    return out


def load_state(root: str | Path, required: Iterable[str] = ()) -> tuple[dict | None, Path | None]:
    """The newest verified :func:`save_state` checkpoint under ``root``: ``(state, folder)`` or ``(None, None)``.

    Broken checkpoints are skipped (see :func:`find_latest`); ``required`` names files
    (``"normalizer.npz"``) a usable one must hold.
    """
    folder, _ = find_latest(root, required)
    return (None, None) if folder is None else (read_state(folder), folder)


def _savez(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:  # a file object keeps np.savez from appending ".npz"
        np.savez(f, **arrays)
