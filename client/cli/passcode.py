"""Where the CLI's passcodes come from, and the minimum a new one must meet.

A passcode protects share files and the backups stored at the host, which an
attacker who gets them can guess at offline (Argon2id slows each guess, it
does not bound their number). So a new passcode must be long: at least
``MIN_LENGTH`` characters, of at least ``MIN_DISTINCT`` different ones. Length
is what counts (NIST SP 800-63B §5.1.1.2, which also drops composition rules);
the distinct count refuses the padding ("aaaaaaaaaaaa", "abababababab") that
would meet the length alone. A new passcode typed at a prompt is typed twice.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Final

__all__ = [
    # Functions
    "check_new_passcode",
    "read_passcode",
    # Exceptions
    "PasscodeError",
    # Constants
    "MIN_DISTINCT",
    "MIN_LENGTH",
]

PASSCODE_ENV: Final = "SHARDKEEP_PASSCODE"
NEW_PASSCODE_ENV: Final = "SHARDKEEP_NEW_PASSCODE"
MIN_LENGTH: Final = 12
MIN_DISTINCT: Final = 6


class PasscodeError(Exception):
    """No usable passcode: none given, empty, too weak, or two entries that differ."""


def check_new_passcode(passcode: str) -> None:
    """Refuse a new passcode below the minimum.

    Raises:
        PasscodeError: shorter than ``MIN_LENGTH`` or fewer than ``MIN_DISTINCT``
            different characters (the message never quotes the passcode).
    """
    if len(passcode) < MIN_LENGTH:
        raise PasscodeError(
            f"a new passcode needs at least {MIN_LENGTH} characters (it has {len(passcode)})"
        )
    if len(set(passcode)) < MIN_DISTINCT:
        raise PasscodeError(f"a new passcode needs at least {MIN_DISTINCT} different characters")


def read_passcode(
    file: Path | None, flag: str, variable: str, what: str, *, new: bool = False
) -> str:
    """The passcode from ``file``, else the environment ``variable``, else a prompt.

    Arguments:
        file: a file holding the passcode (one trailing newline is dropped).
        flag: the option that names ``file``, for the error without a terminal.
        variable: the environment variable to read next.
        what: how the prompt and the errors name it, e.g. "passcode".
        new: a passcode being set: checked against the minimum, and typed
            twice at a prompt.

    Raises:
        PasscodeError: none given without a terminal, empty, too weak, or the
            two prompted entries differ.
        OSError: ``file`` cannot be read.
    """
    if file is not None:
        text = file.read_text(encoding="utf-8").rstrip("\r\n")
    elif os.environ.get(variable):
        text = os.environ[variable]
    elif sys.stdin.isatty():
        text = getpass.getpass(f"shardkeep {what}: ")
        if new and text and getpass.getpass(f"shardkeep {what} again: ") != text:
            raise PasscodeError(f"the two entries of the {what} differ")
    else:
        raise PasscodeError(f"give the {what} with {flag} or ${variable}")
    if not text:
        raise PasscodeError(f"the {what} is empty")
    if new:
        check_new_passcode(text)
    return text
