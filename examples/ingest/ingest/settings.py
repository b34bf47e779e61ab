"""The hot-reloadable part of ingestd's configuration (``--config FILE``, JSON).

Everything that can change without closing a socket or a connection lives here; endpoints,
the database URL, thread counts and the message size limit are command-line options and need
a restart. A file is validated completely before it replaces the settings in force, so a bad
edit followed by ``reload`` leaves the service as it was and says why.

Example::

    {"log_level": "INFO", "max_batch_records": 5000, "max_inflight_requests": 2048,
     "max_inflight_bytes": 67108864, "authorized_keys_dir": "/etc/ingestd/clients"}
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, fields, replace
from typing import Any


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    #: None: whatever --log-level says
    log_level: str | None = None
    #: most records one group commit carries (records of one request are never split)
    max_batch_records: int = 5000
    #: requests taken but not yet acknowledged; past this, intake stops reading (backpressure)
    max_inflight_requests: int = 2048
    max_inflight_bytes: int = 64 * 1024 * 1024
    #: public keys of the clients allowed in when CURVE is on (default: KEYS/authorized)
    authorized_keys_dir: str | None = None


_LIMITS = {
    "max_batch_records": (1, 1_000_000),
    "max_inflight_requests": (1, 1_000_000),
    "max_inflight_bytes": (1024, 1 << 40),
}


def load(path: str | None, base: Settings | None = None) -> Settings:
    """Settings from ``path`` (None: the defaults); raises :class:`SettingsError`."""
    settings = base or Settings()
    if path is None:
        return settings
    try:
        with open(path, encoding="utf-8") as config_file:
            document = json.load(config_file)
    except OSError as exc:
        raise SettingsError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise SettingsError(f"config {path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise SettingsError(f"config {path} must hold a JSON object")
    return replace(Settings(), **_validated(document, path))


def _validated(document: dict[str, Any], path: str) -> dict[str, Any]:
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    for key, raw in document.items():
        if key not in known:
            raise SettingsError(f"config {path}: unknown key {key!r} "
                                f"(known: {', '.join(sorted(known))})")
        values[key] = _value(key, raw, path)
    return values


def _value(key: str, value: Any, path: str) -> Any:
    if key == "log_level":
        if not isinstance(value, str) or not isinstance(
                logging.getLevelName(value.upper()), int):
            raise SettingsError(f"config {path}: log_level {value!r} is not a level name")
        return value.upper()
    if key in _LIMITS:
        low, high = _LIMITS[key]
        if type(value) is not int or not low <= value <= high:
            raise SettingsError(f"config {path}: {key} must be an integer in "
                                f"[{low}, {high}], not {value!r}")
        return value
    # authorized_keys_dir
    if value is None:
        return None
    if not isinstance(value, str):
        raise SettingsError(f"config {path}: authorized_keys_dir must be a path")
    directory = os.path.join(os.path.dirname(os.path.abspath(path)), value)
    if not os.path.isdir(directory):
        raise SettingsError(f"config {path}: authorized_keys_dir {directory} "
                            "is not a directory")
    return directory


class SettingsRef:
    """The settings in force; replaced as a whole by reload, read by every thread."""

    def __init__(self, settings: Settings) -> None:
        self.current = settings
