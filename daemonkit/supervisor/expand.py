"""``%(name)s`` expansion, the one place it is done: what each value may name, and the error.

supervisord formats every value it reads with Python's ``%`` operator and a dict of
expansions, and so do we, with the same names at the same places:

* everywhere: ``here`` (the directory of the file holding the value), ``host_node_name``,
  ``ENV_X`` for the supervisor's environment and ``[supervisord] environment``;
* in program sections: also ``program_name`` and ``group_name``;
* in the per-process keys (``command``, ``process_name``, ``environment``, ``directory``,
  the log files): also ``process_num``, ``numprocs`` and ``ENV_X`` of the program's own
  ``environment``.

A literal ``%`` is written ``%%``, as in supervisord.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping


class ExpansionError(ValueError):
    """A value names an expansion that does not exist, or is not a valid format."""


def expand(raw: str, values: Mapping[str, object], where: str = "") -> str:
    try:
        return raw % values
    except KeyError as exc:
        available = ", ".join(sorted(k for k in values if not k.startswith("ENV_")))
        raise ExpansionError(f"bad %(...)s expansion in {raw!r}: {exc.args[0]} is not "
                             f"defined here (available: {available}, ENV_*)") from None
    except (ValueError, TypeError) as exc:
        raise ExpansionError(f"bad %(...)s expansion in {raw!r}: {exc}") from None


def host_node_name() -> str:
    return os.uname().nodename


def base_values(extra_environment: Iterable[tuple[str, str]] = ()) -> dict[str, object]:
    """What every value may name besides ``here``: the host and the environment (the
    supervisor's own, then ``[supervisord] environment`` on top)."""
    values: dict[str, object] = {f"ENV_{key}": value for key, value in os.environ.items()}
    values.update((f"ENV_{key}", value) for key, value in extra_environment)
    values["host_node_name"] = host_node_name()
    return values


def with_environment(values: Mapping[str, object], environment: Iterable[tuple[str, str]]
                     ) -> dict[str, object]:
    merged = dict(values)
    merged.update((f"ENV_{key}", value) for key, value in environment)
    return merged
