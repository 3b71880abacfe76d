"""The ``shardkeep`` entry point: Ctrl-C is one line and exit status 130 from the start.

The command line's modules (the SDK, gRPC, the cryptography) take a second or
two to import, more on a busy machine; an interrupt while they load would end
in a KeyboardInterrupt traceback before ``client.cli.main.main`` could catch
it. So this module, which imports nothing heavy, loads them inside the same
handling as the run.
"""

from __future__ import annotations

import sys

from client.cli.exits import EXIT_INTERRUPTED

__all__ = ["main"]


def main() -> int:
    """Import and run the command line (``client.cli.main.main``); its exit status."""
    try:
        from client.cli.main import main as run  # the slow imports, inside the handling

        return run()
    except KeyboardInterrupt:
        print("shardkeep: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
