"""Directories a command makes for itself and may later delete (``shardkeep demo``, ``dev up``).

A marker file is the only proof that a directory is the command's own: a
directory holding it is wiped and made again; an empty or new one is used;
anything else may be the user's files and is refused before anything is
written or deleted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tss.errors import InputError

__all__ = ["ForeignDirectoryError", "prepare_marked_directory"]


class ForeignDirectoryError(InputError):
    """The directory holds files the command did not make; it is left untouched."""


def prepare_marked_directory(
    directory: Path,
    marker: str,
    command: str,
    error: type[ForeignDirectoryError] = ForeignDirectoryError,
) -> None:
    """Make ``directory`` an empty directory holding ``marker``.

    Arguments:
        directory: the directory to (re)make.
        marker: the marker file's name.
        command: the command, as the user types it (named in the messages).
        error: the exception to raise (a subclass, for callers that name their own).

    Raises:
        ForeignDirectoryError: ``directory`` is a file, or a non-empty
            directory without the marker.
    """
    if directory.exists() and not directory.is_dir():
        raise error(f"{directory} is not a directory; choose another --dir")
    if directory.is_dir() and any(directory.iterdir()):
        if not (directory / marker).is_file():
            raise error(
                f"{directory} is not empty and was not made by `{command}` (no {marker}); "
                "choose an empty or new --dir, or delete it yourself"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / marker).write_text(f"made by `{command}`; its next run deletes this directory\n")
