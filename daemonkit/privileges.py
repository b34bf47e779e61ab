"""Dropping root for good.

Order matters and every step is checked: supplementary groups first (``initgroups`` for the
user, or none at all: root's groups must not survive, python-daemon and most libraries keep
them), then the gid, then the uid, with ``setres*id`` so the saved ids go too. Afterwards we
verify that all three ids are dropped and that asking for root back fails.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass

from .errors import ConfigError, PrivilegeError


@dataclass(frozen=True)
class Identity:
    """Who the daemon becomes; resolved in the command process so errors are reported there."""

    user: str | None
    uid: int
    gid: int
    home: str | None


def resolve_identity(user: str | None, group: str | None) -> Identity | None:
    """Look the names up; None when no drop was asked for."""
    if user is None and group is None:
        return None
    uid, gid, home = os.getuid(), os.getgid(), None
    if user is not None:
        try:
            entry = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
        except KeyError:
            raise ConfigError(f"unknown user {user!r}") from None
        uid, gid, home, user = entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_name
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid if not group.isdigit() else grp.getgrgid(
                int(group)).gr_gid
        except KeyError:
            raise ConfigError(f"unknown group {group!r}") from None
    if os.geteuid() != 0 and (uid != os.geteuid() or gid != os.getegid()):
        raise PrivilegeError(
            f"switching to user {user or uid}/group {group or gid} needs root "
            f"(running as uid {os.geteuid()})"
        )
    return Identity(user=user, uid=uid, gid=gid, home=home)


def drop_privileges(identity: Identity) -> None:
    """Become ``identity`` irrevocably; raises PrivilegeError if any check fails."""
    if os.geteuid() != 0:
        return  # resolve_identity already made sure we are that user
    if identity.user is not None:
        os.initgroups(identity.user, identity.gid)
    else:
        os.setgroups([])
    os.setresgid(identity.gid, identity.gid, identity.gid)
    os.setresuid(identity.uid, identity.uid, identity.uid)
    if set(os.getresuid()) != {identity.uid} or set(os.getresgid()) != {identity.gid}:
        raise PrivilegeError("privilege drop incomplete: real/effective/saved ids differ")
    if identity.uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            return
        raise PrivilegeError("privilege drop failed: could regain root")
