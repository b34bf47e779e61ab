"""The bounds on what a config may ask for, checked at load, so nothing reaches the loop unbounded.

supervisord bounds almost nothing: ``stopwaitsecs = 1e12`` loads, then ``stop`` overflows
``select()``; ``numprocs = 10**20`` makes the loader spin until memory runs out; a 100 MB value
takes minutes to split. Each bound here is far above any real use and low enough that the
worst allowed value costs the loop little: the loader refuses anything beyond it with one line
naming file, section, key and the allowed range (see :func:`check_key`).

:func:`select_timeout` is the last guard where a timeout meets ``select()``: whatever
arithmetic produced it, the loop never passes the kernel a value it cannot take.
"""

from __future__ import annotations

import math

#: every duration key (seconds): above 2**31 ms, poll()/select() overflow; 1,000,000 s is
#: 11.6 days, more than any stop or start should ever be given
MAX_DURATION_S = 1_000_000.0
#: instances of one program, and of all programs together (issue 3 measures 2,000)
MAX_NUMPROCS = 10_000
MAX_INSTANCES = 10_000
#: one config file, all files together, and how many files an [include] may add
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_TOTAL_BYTES = 16 * 1024 * 1024
MAX_FILES = 10_000
#: one value (a command, an environment): ARG_MAX-sized values are not configuration, and
#: splitting one costs time quadratic in its length
MAX_VALUE_BYTES = 64 * 1024
#: one value after %(...)s expansion, and the widest field a reference may ask for
MAX_EXPANDED_BYTES = 256 * 1024
MAX_FIELD_WIDTH = 4096
#: what every process's command, environment, directory and log keys add up to before
#: expansion (numprocs times each): 10,000 processes of 800 bytes, 2,000 of 4 KiB
MAX_INSTANCE_TEXT = 8 * 1024 * 1024
#: the loop sleeps at most this long in one select() (it re-reads its timers each wake)
MAX_SELECT_S = 3600.0

_INT32 = (-(2**31), 2**31 - 1)

#: key name -> (lowest, highest) allowed, for every section that has the key
KEY_BOUNDS: dict[str, tuple[float, float]] = {
    **{key: (0.0, MAX_DURATION_S) for key in (
        "startsecs", "stopwaitsecs", "ready_timeout", "backoff_initial", "backoff_max")},
    "numprocs": (0, MAX_NUMPROCS),
    "numprocs_start": (0, 1_000_000),
    "startretries": (0, 1_000_000),
    "priority": _INT32,
    "stdout_logfile_backups": (0, 1000),
    "stderr_logfile_backups": (0, 1000),
    "logfile_backups": (0, 1000),
    "stdout_logfile_maxbytes": (0, 2**40),
    "stderr_logfile_maxbytes": (0, 2**40),
    "logfile_maxbytes": (0, 2**40),
    "stdout_capture_maxbytes": (0, 2**30),
    "stderr_capture_maxbytes": (0, 2**30),
    "minfds": (0, 1 << 20),  # the kernel's nr_open ceiling
    "minprocs": (0, 1 << 22),  # the kernel's pid_max ceiling
}


def check_key(key: str, value: object) -> str | None:
    """Why ``value`` is out of bounds for ``key`` (None: fine, or not a bounded key)."""
    bounds = KEY_BOUNDS.get(key)
    if bounds is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    low, high = bounds
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if not low <= value <= high:
        return f"out of range: allowed {_shown(low)} to {_shown(high)}, got {_shown(value)}"
    return None


def select_timeout(timeout: float | None) -> float | None:
    """A timeout ``select()`` accepts: finite, >= 0, at most :data:`MAX_SELECT_S`."""
    if timeout is None:
        return None
    if math.isnan(timeout):
        return 0.0
    return min(max(timeout, 0.0), MAX_SELECT_S)


def _shown(number: float) -> str:
    if isinstance(number, float) and number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return f"{number:g}" if isinstance(number, float) else str(number)
