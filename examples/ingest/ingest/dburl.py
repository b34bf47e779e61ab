"""``--db`` URLs in the SQLAlchemy spelling, parsed without SQLAlchemy.

``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``postgresql://user:pw@host:port/db``
(also ``postgresql+psycopg://``), ``mysql://user:pw@host:port/db`` (also ``mysql+pymysql://``,
``mariadb://``). Query parameters are passed to the driver (``?unix_socket=...``,
``?sslmode=...``, ``?synchronous=NORMAL`` for SQLite).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

_SCHEMES = {
    "sqlite": "sqlite", "sqlite+pysqlite": "sqlite",
    "postgresql": "postgresql", "postgres": "postgresql", "postgresql+psycopg": "postgresql",
    "mysql": "mysql", "mysql+pymysql": "mysql", "mariadb": "mysql", "mariadb+pymysql": "mysql",
}


class BadURL(ValueError):
    pass


@dataclass(frozen=True)
class DatabaseURL:
    kind: str  # "sqlite" | "postgresql" | "mysql"
    path: str = ""  # SQLite file
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    database: str | None = None
    params: dict[str, str] = field(default_factory=dict)

    def redacted(self) -> str:
        """For logs and status: never print the password."""
        if self.kind == "sqlite":
            return f"sqlite:///{self.path}"
        user = f"{self.user}{':***' if self.password else ''}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{self.kind}://{user}{self.host or ''}{port}/{self.database or ''}"


def parse(url: str, base_dir: str | None = None) -> DatabaseURL:
    """Parse ``url``; a relative SQLite path is resolved against ``base_dir`` (or cwd)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise BadURL(f"not a database URL (expected scheme://...): {url!r}")
    kind = _SCHEMES.get(scheme.lower())
    if kind is None:
        raise BadURL(f"unsupported database scheme {scheme!r} "
                     "(use sqlite://, postgresql:// or mysql://)")
    if kind == "sqlite":
        return _parse_sqlite(rest, base_dir)
    parts = urlsplit(f"x://{rest}")
    try:
        port = parts.port
    except ValueError as exc:
        raise BadURL(f"bad port in {url!r}: {exc}") from None
    database = unquote(parts.path.lstrip("/")) or None
    if not database:
        raise BadURL(f"no database name in {url!r} (…/DBNAME)")
    return DatabaseURL(
        kind=kind,
        host=unquote(parts.hostname) if parts.hostname else None,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        database=database,
        params=dict(parse_qsl(parts.query)),
    )


def _parse_sqlite(rest: str, base_dir: str | None) -> DatabaseURL:
    # sqlite:///rel.db -> rest "/rel.db"; sqlite:////abs.db -> rest "//abs.db"
    path, _, query = rest.partition("?")
    if not path.startswith("/"):
        raise BadURL("SQLite URLs have no host: sqlite:///relative.db or sqlite:////abs.db")
    path = unquote(path[1:])
    if not path or path == ":memory:":
        raise BadURL("an in-memory SQLite database would lose every acknowledged record")
    if not os.path.isabs(path):
        path = os.path.join(base_dir or os.getcwd(), path)
    return DatabaseURL(kind="sqlite", path=os.path.normpath(path), params=dict(parse_qsl(query)))
