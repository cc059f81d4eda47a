"""Files: atomic writes (a failed or interrupted run never leaves a half-written artifact or
overwrites a good one), the one JSON writer, and torch files read with typed errors."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from convexrobust.errors import InvalidInputError

__all__ = ["append_json_line", "read_torch", "write_atomic", "write_json_atomic"]


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    The file gets the permissions an ordinary ``open(path, "w")`` would give it (``0o666`` less
    the umask), not the owner-only mode of the temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, payload: object, *, indent: int | None = 2,
                      default: Callable[[object], object] | None = None) -> Path:
    """Write ``payload`` as JSON text (``indent``, a final newline) to ``path`` atomically
    (:func:`write_atomic`). ``default`` converts objects JSON does not know (as in
    :func:`json.dump`); without it such an object is a ``TypeError`` and nothing is written."""

    def dump(tmp: Path) -> None:
        with open(tmp, "w") as fh:
            json.dump(payload, fh, indent=indent, default=default)
            fh.write("\n")

    return write_atomic(path, dump)


def append_json_line(path: str | os.PathLike, record: object) -> Path:
    """Append ``record`` as one JSON line to the JSON-lines file ``path``, atomically: the file
    is rewritten with the new line (a log of one line per epoch stays small), so an interrupted
    append leaves the previous lines, never half a line."""
    path = Path(path)
    line = json.dumps(record) + "\n"
    old = path.read_text() if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(old + line))


def read_torch(path: str | os.PathLike, *, what: str, map_location: object = "cpu",
               weights_only: bool = True) -> object:
    """``torch.load(path)``, with a missing or unreadable file raised as
    :class:`~convexrobust.errors.InvalidInputError` naming ``what`` was expected. With
    ``weights_only`` (the default) nothing is unpickled beyond tensors and plain containers;
    the message then says how to read a file that pickles a module (only for trusted files)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"no {what} file at {path} (no checkpoint there)")
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as err:  # noqa: BLE001 - torch raises several types here
        hint = (" if it pickles a custom module, pass trust_pickle=True (--trust-pickle); "
                "unpickling runs code, so only for files you trust" if weights_only else "")
        raise InvalidInputError(f"cannot read {path} as a {what} ({type(err).__name__}: "
                                f"{str(err).splitlines()[0][:300] if str(err) else ''});"
                                f"{hint}") from None


def _umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
