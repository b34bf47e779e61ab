"""``daemonkit`` command: tools that are not one service's own CLI.

``daemonkit supervise ...`` runs the process supervisor; ``daemonkit init-files ...`` writes
systemd units and SysV scripts for a service script.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

USAGE = """usage: daemonkit {supervise,init-files} ...

  supervise -c FILE COMMAND [ARGS...]  run or control the process supervisor
                                       (daemonkit supervise --help: every command)
  init-files SCRIPT [--user USER]      write a systemd unit and a SysV script for SCRIPT
"""


def _supervise(argv: list[str]) -> int:
    from .supervisor.cli import main as supervise_main

    return int(supervise_main(argv))


def _init_files(argv: list[str]) -> int:
    from .initfiles import main as init_files_main  # type: ignore[import-not-found,unused-ignore]

    return int(init_files_main(argv))


_TOOLS: dict[str, Callable[[list[str]], int]] = {
    "supervise": _supervise,
    "init-files": _init_files,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help", "help"):
        from .supervisor.cli import USAGE as SUPERVISE_USAGE

        print(USAGE + "\n" + SUPERVISE_USAGE, end="")
        return 0
    if not args or args[0] not in _TOOLS:
        print(USAGE, file=sys.stderr, end="")
        return 2
    return _TOOLS[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())
