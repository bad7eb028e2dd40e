"""Saving and loading checkpoints: written atomically, sealed with a SHA-256 of their bytes.

`save_verified(obj, path)` writes `torch.save(obj)` to a temporary file in the same folder,
fsyncs it and renames it over `path`, so a reader (or a run killed mid-write) sees either
the old file or the new one, never a part. The file stays an ordinary torch file
(`torch.load` reads it): the SHA-256 of every byte before it is stored as the zip archive's
comment ("vardbio-sha256:<64 hex digits>", the last 79 bytes of the file).

`load_verified(path, what=...)` checks that seal before unpickling anything, and refuses an
empty, truncated, corrupted, text or foreign file with one line naming the file and the
problem (a CorruptCheckpointError or a CheckpointMismatchError, both ValueErrors). Files
written before checksums existed (the shipped models/weights/*.pt) carry none: they are
accepted only when the caller's `legacy` test accepts what they unpickle to, and are
logged once (logging, INFO) as unverified.

`keep_previous=True` keeps the file being overwritten as `<stem>.prev<suffix>` (see
`previous_path`), e.g. checkpoints/last.pt -> checkpoints/last.prev.pt, so a resume can
fall back one step when the newest file is damaged. A current file that fails its checksum
is not kept (the older .prev stays).

Model checkpoints (`save_model`, `read_checkpoint`) are a dict
{"format": "vardbio-model-1", "spec", "state_dict", "extra"} saved this way.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

import torch

from vardbio.model.diffusion import DiffusionModel

FORMAT = "vardbio-model-1"

_TAG = b"vardbio-sha256:"
_SEAL_LEN = len(_TAG) + 64  # the zip comment: tag + hex digest
_ZIP_START = b"PK\x03\x04"
_ZIP_END = b"PK\x05\x06"  # end-of-central-directory record, 22 bytes + comment
_log = logging.getLogger(__name__)
_reported_unverified: set[str] = set()


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message is one line naming the file."""


class CorruptCheckpointError(CheckpointError):
    """An empty, truncated or damaged checkpoint (checksum mismatch), or not one at all."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint of something else (another format, plugin or architecture)."""


# ------------------------------------------------------------------ sealed files
def previous_path(path: str | Path) -> Path:
    """Where save_verified(..., keep_previous=True) keeps the file it replaced."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_verified(obj: Any, path: str | Path, keep_previous: bool = False) -> Path:
    """Write `obj` with torch.save to `path` atomically, sealed with its SHA-256.

    keep_previous: keep the file being replaced (if its checksum holds, or it predates
    checksums) as previous_path(path). Returns `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = _seal(buf.getvalue())
    tmp = _temporary(path)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.is_file():
            _keep_previous(path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def load_verified(path: str | Path, what: str = "checkpoint",
                  legacy: Callable[[Any], bool] | None = None) -> Any:
    """The object saved by save_verified at `path`, after its checksum is checked.

    what:   what the file should be, for error messages ("model checkpoint", "resume state").
    legacy: for a file without a checksum (written before they existed): a test of its
            unpickled content; the file is accepted (and logged once as unverified) only if
            it returns True. None: such files are refused.
    Raises FileNotFoundError for a missing file, CorruptCheckpointError for an empty,
    truncated, damaged, text or unreadable one, CheckpointMismatchError for a readable file
    that is not a `what`; every message is one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    data = path.read_bytes()
    problem = _seal_problem(data)
    if problem is None:
        return _unpickle(data, path, what)
    if problem != "no checksum":
        raise CorruptCheckpointError(f"{what} {path}: {problem}")
    obj = _unpickle(data, path, what)
    if legacy is None or not legacy(obj):
        raise CheckpointMismatchError(
            f"{what} {path}: not a {what} (no checksum, and it holds {_describe(obj)})")
    if str(path.resolve()) not in _reported_unverified:
        _reported_unverified.add(str(path.resolve()))
        _log.info("%s %s has no checksum (saved before checksums existed): loaded unverified",
                  what, path)
    return obj


def _seal(data: bytes) -> bytes:
    """torch.save output with the SHA-256 of all bytes before the digest as zip comment."""
    end = data[-22:]
    if not (data.startswith(_ZIP_START) and end.startswith(_ZIP_END) and end[-2:] == b"\0\0"):
        raise RuntimeError("torch.save did not write a zip archive ending in an empty comment; "
                           "this torch version is not supported by save_verified")
    body = data[:-2] + _SEAL_LEN.to_bytes(2, "little") + _TAG
    return body + hashlib.sha256(body).hexdigest().encode()


def _seal_problem(data: bytes) -> str | None:
    """None if the seal holds; "no checksum" for a complete file without one; else what is
    wrong with the file."""
    if not data:
        return "the file is empty (0 bytes)"
    if data.startswith(_ZIP_START):
        seal_at = len(data) - _SEAL_LEN
        if data[seal_at:seal_at + len(_TAG)] == _TAG:
            if data[seal_at - 2:seal_at] != _SEAL_LEN.to_bytes(2, "little"):
                return "damaged end of file (the checksum is not where the archive says)"
            stored = data[-64:].decode("ascii", errors="replace")
            actual = hashlib.sha256(data[:-64]).hexdigest()
            if stored != actual:
                return (f"checksum mismatch, the content is corrupted (stored sha256 "
                        f"{stored[:12]}..., content {actual[:12]}...)")
            return None
        end = data.rfind(_ZIP_END, max(0, len(data) - 65_557))
        if end < 0 or end + 22 > len(data):
            return f"truncated: the end of the archive is missing ({len(data)} bytes)"
        if end + 22 + int.from_bytes(data[end + 20:end + 22], "little") != len(data):
            return f"truncated or damaged end of the archive ({len(data)} bytes)"
        return "no checksum"
    if data[:1] == b"\x80":  # a pickle: torch's pre-zip format or a plain pickle
        return "no checksum"
    head = data[:512]
    if b"\0" not in head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            start = " ".join(text.split())[:40]
            return f"a text file, not a checkpoint (it starts {start!r})"
    return f"not a checkpoint (unrecognised content starting with bytes {data[:8].hex()})"


def _unpickle(data: bytes, path: Path, what: str) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure becomes one line
        torch_error = err
    if not data.startswith(_ZIP_START):
        try:  # say what a foreign plain pickle holds
            obj = pickle.loads(data)
        except Exception:  # noqa: BLE001
            pass
        else:
            raise CheckpointMismatchError(
                f"{what} {path}: not a {what} (a plain pickle of {_describe(obj)})")
    raise CorruptCheckpointError(f"{what} {path}: cannot be unpickled ({_one_line(torch_error)})")


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        keys = sorted(map(str, obj))
        shown = ", ".join(keys[:6]) + (", ..." if len(keys) > 6 else "")
        fmt = f"format {obj['format']!r}, " if "format" in obj else ""
        return f"a dict with {fmt}keys [{shown}]"
    return f"a {type(obj).__name__}"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _keep_previous(path: Path) -> None:
    """Keep `path` as previous_path(path) unless its own checksum fails."""
    problem = _seal_problem(path.read_bytes())
    if problem not in (None, "no checksum"):
        _log.warning("not keeping %s as %s: %s", path, previous_path(path).name, problem)
        return
    prev = previous_path(path)
    tmp = _temporary(prev)
    try:
        os.link(path, tmp)  # the same bytes under a second name, no copy
    except OSError:
        shutil.copy2(path, tmp)
    os.replace(tmp, prev)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------ model checkpoints
def is_model_checkpoint(blob: Any) -> bool:
    """True for the dict save_model writes."""
    return (isinstance(blob, dict) and blob.get("format") == FORMAT and "spec" in blob
            and "state_dict" in blob)


def save_model(model: DiffusionModel, path: str | Path, keep_previous: bool = False,
               **extra: Any) -> Path:
    """Write weights, spec and `extra` metadata (e.g. training metrics) to `path`, atomically
    and with a checksum (save_verified); keep_previous keeps the replaced file as .prev."""
    return save_verified({"format": FORMAT, "spec": model.spec, "state_dict": model.state_dict(),
                          "extra": extra}, path, keep_previous=keep_previous)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dictionary, its checksum checked (load_verified); one-line errors
    for a missing, damaged or foreign file. Checkpoints from before checksums are accepted
    when they hold a model checkpoint dict."""
    blob = load_verified(path, what="model checkpoint", legacy=is_model_checkpoint)
    if not is_model_checkpoint(blob):
        raise CheckpointMismatchError(
            f"model checkpoint {path}: not a vardbio model checkpoint (it holds {_describe(blob)})")
    return blob


def load_weights(model: DiffusionModel, path: str | Path) -> DiffusionModel:
    """Load weights into `model`, refusing a checkpoint whose spec differs."""
    return apply_weights(model, read_checkpoint(path), path)


def apply_weights(model: DiffusionModel, blob: dict[str, Any], source: str | Path) -> DiffusionModel:
    """load_weights for a checkpoint already read with read_checkpoint (`source` names it).
    A checkpoint of a model with frozen final steps (DiffusionModel.freeze_final_steps)
    freezes them in `model` too before its weights, the frozen copy's among them, load."""
    frozen = blob["spec"].get("frozen_final_steps", 0)
    if frozen and not model.frozen_final_steps:
        model.freeze_final_steps(frozen)
    if blob["spec"] != model.spec:
        raise CheckpointMismatchError(
            f"checkpoint {source} was made for model {blob['spec']}, not {model.spec}"
        )
    model.load_state_dict(blob["state_dict"])
    return model
