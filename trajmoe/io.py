"""Atomic file writes and small file helpers shared by every module.

Everything the library writes goes to a temporary file in the destination directory and is
renamed into place (`os.replace` is atomic on POSIX), so an interrupted write never leaves a
partial file and never corrupts what was there before.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator
from pathlib import PurePosixPath
import fcntl
import shutil
import zipfile
import zlib

from trajmoe.faults import crash_point

# What reading a missing-part or damaged file can raise beyond OSError / ValueError: a truncated stream
# (EOFError), a zip's bad directory or CRC (BadZipFile), a damaged deflate stream of the same size
# (zlib.error), an absent member (KeyError). Readers catch these and raise one line naming the file.
DAMAGED_FILE_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)

# OS-level failures of the storage itself (not of the program): what `storage_errors` turns into one line.
STORAGE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                  errno.EPERM: "operation not permitted", errno.EIO: "input/output error"}


class StorageError(OSError):
    """A write or read that the storage refused (no space, read-only, permission, I/O error): one line
    naming the path (`storage_errors`); the CLI prints it without a traceback (exit code 2)."""


@contextlib.contextmanager
def storage_errors(path: str | os.PathLike, action: str = "write") -> Iterator[None]:
    """The one place OS-level storage failures become one-line `StorageError`s naming `path`.

    Wrap every writer (and reader) of a file or folder in it: an OSError with an errno of
    `STORAGE_ERRNOS`, or a library error that reports one as "os error N" (safetensors), is raised
    again as StorageError("cannot {action} {path}: {reason}"); anything else passes unchanged.
    """
    try:
        yield
    except StorageError:
        raise
    except Exception as e:
        code = e.errno if isinstance(e, OSError) else None
        if code is None and not isinstance(e, OSError):
            m = re.search(r"os error (\d+)", str(e))
            code = int(m.group(1)) if m else None
        if code not in STORAGE_ERRNOS:
            raise
        err = StorageError(f"cannot {action} {path}: {STORAGE_ERRNOS[code]}")
        err.errno = code
        raise err from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it onto `path`, else delete it.

    Use it for writers that want a filename (h5py, safetensors, imageio, matplotlib). Storage
    failures (no space, read-only, ...) are one-line `StorageError`s naming `path` (`storage_errors`).
    """
    path = Path(path)
    with storage_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            raise PermissionError(f"output directory is not writable: {path.parent}")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or (path.suffix + ".tmp"), dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the final file normal permissions
        try:
            yield tmp_path
            crash_point("write", path.name)  # kill -9 tests (trajmoe.faults); one env lookup when unset
            os.replace(tmp_path, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()
            raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (temporary file, fsync, rename): readers see the old or the new file,
    never half.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically (see `atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically (numpy scalars/arrays and paths converted)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def finite_json(obj: Any) -> Any:
    """`obj` with every NaN / inf float replaced by None, so `json.dumps` writes valid JSON (null)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON with a one-line error naming the file when it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"corrupt JSON file {path}: {e}") from None


def _json_default(o: Any) -> Any:
    try:
        # lazy: numpy only when a numpy value is written (io is imported by the light CLI)
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ----------------------------------------------------------------------------------------------
# Leftovers of killed writers, folder locks, paths that must stay inside their folder


def is_temp_name(name: str) -> bool:
    """True for the hidden temporary names `atomic_path` creates (`.NAME.<random>.tmp`, `.NAME.<random>.tmp.npz`)
    and the checkpoint's temporary step directories (`.step_N.tmp`)."""
    return name.startswith(".") and (name.endswith(".tmp") or name.endswith(".tmp.npz"))


def remove_stale_temps(directory: str | os.PathLike, prefix: str = "") -> list[Path]:
    """Delete the temporary files / folders a killed writer left in `directory` (not recursive).

    Only call it while holding the folder's lock (`DirLock`): a live writer's temporary file looks
    the same. `prefix` limits it to temporaries of one target (`.demo_3.hdf5.` -> prefix "demo_3.hdf5.").
    Returns what was removed.
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    removed = []
    for p in d.iterdir():
        if is_temp_name(p.name) and p.name[1:].startswith(prefix):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            removed.append(p)
    return removed


_HELD_LOCKS: dict[str, "DirLock"] = {}


class DirLock:
    """An exclusive advisory lock on a folder (`fcntl.flock` on `<folder>/<name>`), one writer at a time.

    The kernel drops the lock when the holder exits, however it dies (kill -9 included), so a
    crashed run never blocks its own rerun. A second process gets a one-line ValueError naming the
    folder and the holder's pid. Re-entrant within a process: locking a folder this process
    already holds returns the held lock.
    """

    def __init__(self, directory: str | os.PathLike, name: str = ".lock"):
        self.path = Path(directory) / name
        self._fd: int | None = None

    @classmethod
    def acquire(cls, directory: str | os.PathLike, name: str = ".lock", what: str = "folder") -> "DirLock":
        """Take the exclusive lock DIRECTORY/NAME without waiting (re-entrant within this process).

        Raises:
            ValueError: another process holds it (names the folder and the holder's pid).
        """
        lock = cls(directory, name)
        key = str(lock.path.resolve()) if lock.path.parent.exists() else str(lock.path.absolute())
        held = _HELD_LOCKS.get(key)
        if held is not None and held._fd is not None:
            return held
        with storage_errors(lock.path.parent, f"write into the {what}"):
            lock.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            finally:
                os.close(fd)
            raise ValueError(f"{what} {lock.path.parent} is in use by another process (pid {holder}); "
                             "wait for it to finish or use another output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        lock._fd = fd
        _HELD_LOCKS[str(lock.path.resolve())] = lock
        return lock

    def release(self) -> None:
        """Give the lock back (idempotent); the lock file itself stays."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _HELD_LOCKS.pop(str(self.path.resolve()), None)
            os.close(fd)  # closing the descriptor drops the flock

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def __enter__(self) -> "DirLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def close_inherited_locks() -> None:
    """In a forked child (DataLoader worker): close the inherited lock descriptors without unlocking,
    so that a child outliving its killed parent does not keep the parent's folder locked."""
    for lock in list(_HELD_LOCKS.values()):
        if lock._fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock._fd)
            lock._fd = None
    _HELD_LOCKS.clear()


def safe_relative(base: str | os.PathLike, rel: str, where: str) -> Path:
    """`base / rel` for a path read from a file (manifest entry, spec name) that must stay inside `base`.

    Refuses (one-line ValueError naming `where` and the value) absolute paths, `..` components,
    backslashes and empty names; symlinks inside `base` are the user's business and are followed.
    """
    text = str(rel)
    parts = PurePosixPath(text).parts
    if not text or "\\" in text or PurePosixPath(text).is_absolute() or ".." in parts or "\x00" in text:
        raise ValueError(f"{where}: path {text!r} must be a relative path inside {base} (no '..', not absolute)")
    return Path(base) / text


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two JSON-like values differ, with both values: ["train.lr (0.001 != 0.01)"]."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            key = f"{prefix}{k}"
            if k not in a or k not in b:
                out.append(f"{key} ({'absent' if k not in a else json.dumps(a[k], default=_json_default)} != "
                           f"{'absent' if k not in b else json.dumps(b[k], default=_json_default)})")
            else:
                out.extend(diff_keys(a[k], b[k], key + "."))
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b):
        return []
    return [] if a == b else [f"{prefix.rstrip('.') or 'value'} ({json.dumps(a, default=_json_default)} != {json.dumps(b, default=_json_default)})"]


def check_settings(path: str | os.PathLike, settings: dict, what: str, may_differ: tuple[str, ...] = (),
                   fallback: dict | None = None) -> None:
    """Record `settings` (JSON) in `path` the first time; on later runs refuse other settings.

    `may_differ` are top-level keys allowed to change (e.g. the number of episodes). When `path` is
    absent but an older record exists (`fallback`, e.g. a manifest's spec), that is compared instead
    and `path` is written. Raises a one-line ValueError naming every differing key.
    """
    path = Path(path)
    old = read_json(path) if path.is_file() else fallback
    if old is not None:
        if not isinstance(old, dict):
            raise ValueError(f"{path}: expected a JSON object")
        strip = lambda d: {k: v for k, v in json.loads(json.dumps(d, default=_json_default)).items() if k not in may_differ}  # noqa: E731
        diffs = diff_keys(strip(old), strip(settings))
        if diffs:
            raise ValueError(f"{path.parent} holds a {what} made with other settings: {', '.join(diffs)} "
                             "(use another output folder)")
    if not path.is_file() or old != settings:
        atomic_write_json(path, settings)
