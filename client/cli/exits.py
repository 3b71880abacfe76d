"""The exit codes of the ``shardkeep`` command line (documented in ``shardkeep --help``)."""

from typing import Final

EXIT_OK: Final = 0
EXIT_FAILED: Final = (
    1  # the command ran and failed (a refused signature, an invalid document, a lost connection)
)
EXIT_USAGE: Final = 2  # the command was wrong (a flag, a file, a passcode)
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_CLOSED_PIPE: Final = 141  # 128 + SIGPIPE, what a shell reports for a closed pipe
