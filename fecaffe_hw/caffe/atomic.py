"""Atomic file replacement, so an interrupted write never leaves a truncated file."""

import os
import pathlib
import tempfile

__all__ = ["write_atomically"]


def write_atomically(path, data, error):
    """Write ``data`` (bytes) to ``path`` via a temporary file and ``os.replace``.

    The temporary file sits in the same directory, so the rename is atomic on
    POSIX and Windows; readers see the old file or the new one, never a part.
    An ``OSError`` is re-raised as ``error(message)``; the caller adds the path
    to the one-line message (``"cannot write file: ..."``).
    """
    path = pathlib.Path(path)
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=".tmp")
    except OSError as exc:
        raise error(f"cannot write file: {exc.strerror or exc}") from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise error(f"cannot write file: {exc.strerror or exc}") from None
        raise
