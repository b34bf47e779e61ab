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
import re
from collections.abc import Iterable, Mapping

from . import limits


class ExpansionError(ValueError):
    """A value names an expansion that does not exist, or is not a valid format."""


#: a reference, its flags, width and precision: ``%(process_num)02d``
_REFERENCE_RE = re.compile(r"%\(([^)]*)\)[-#0 +]*(\d*)(?:\.(\d*))?")


def expand(raw: str, values: Mapping[str, object], where: str = "") -> str:
    _check_size(raw, values)
    try:
        return raw % values
    except KeyError as exc:
        available = ", ".join(sorted(k for k in values if not k.startswith("ENV_")))
        raise ExpansionError(f"bad %(...)s expansion in {raw!r}: {exc.args[0]} is not "
                             f"defined here (available: {available}, ENV_*)") from None
    except (ValueError, TypeError) as exc:
        raise ExpansionError(f"bad %(...)s expansion in {raw!r}: {exc}") from None


def _check_size(raw: str, values: Mapping[str, object]) -> None:
    """Refuse before formatting what would expand past the limit: ``%(ENV_X)s`` repeated,
    or ``%(process_num)0999999999d``, allocate before ``%`` could fail."""
    if "%" not in raw:
        return
    size = len(raw)
    for match in _REFERENCE_RE.finditer(raw):
        width = max(int(match.group(2) or 0), int(match.group(3) or 0))
        if width > limits.MAX_FIELD_WIDTH:
            raise ExpansionError(f"bad %(...)s expansion: field width {width} in "
                                 f"{match.group(0)!r} (at most {limits.MAX_FIELD_WIDTH})")
        found = values.get(match.group(1))
        size += max(width, len(str(found)) if found is not None else 0)
    if size > limits.MAX_EXPANDED_BYTES:
        raise ExpansionError(f"expands to more than {limits.MAX_EXPANDED_BYTES} characters "
                             "(the limit)")


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
