"""Opening a log file for append without letting another local user choose what gets written.

A supervisor running as root appends child output to paths it did not create, often in
``/tmp``. Opened naively (``O_APPEND|O_CREAT``), a symlink planted there by ``nobody`` makes
root append to a file of root's (which the web page then serves), a hard link does the same
without a symlink, a planted FIFO blocks the writer, and a planted regular file hands the
output to its owner. So the last path component is opened relative to its directory, with
``O_NOFOLLOW|O_NONBLOCK``, and what was opened is checked with ``fstat``:

* in a *private* directory (owned by root or by us, not writable by group or others) any
  entry is the administrator's choice: ``/dev/stdout``, a FIFO, a symlink all work;
* in a *shared* directory (anyone else can create entries there): a symlink is followed only
  if root or we own it and the directory is sticky (nobody can replace it); what is opened
  must be owned by root or by us, and a regular file must have one link only.

Anything else is refused with :class:`UnsafeLog`, one line saying why; the caller keeps
running without that log. :func:`private_dir` makes the 0700 directory AUTO logs go into when
their directory is shared.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import BinaryIO

_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


class UnsafeLog(OSError):
    """A log path another user could have chosen the target of; ``str()`` says why."""


def _trusted(uid: int) -> bool:
    return uid in (0, os.geteuid())


def is_private(info: os.stat_result) -> bool:
    """A directory nobody else can create entries in."""
    return _trusted(info.st_uid) and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def open_append(path: str, mode: int = 0o644) -> int:
    """An fd appending to ``path``, creating it; UnsafeLog (or OSError) if it cannot be."""
    directory, name = os.path.split(path)
    if not name:
        raise UnsafeLog(errno.EISDIR, f"{path}: not a file name")
    dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dir_info = os.fstat(dir_fd)
        private = is_private(dir_info)
        try:
            fd = os.open(name, _APPEND | os.O_NOFOLLOW, mode, dir_fd=dir_fd)
        except OSError:
            if not _is_symlink(name, dir_fd):  # ELOOP; some kernels say EACCES with O_CREAT
                raise
            _check_symlink(path, name, dir_fd, dir_info)
            fd = os.open(name, _APPEND, mode, dir_fd=dir_fd)
        try:
            if not private:
                _check_shared(path, os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        return fd
    finally:
        os.close(dir_fd)


def open_read(path: str) -> int:
    """An fd reading the log at ``path`` (``tail``, the web page), under the rules above:
    a symlink planted where a log was refused must not serve its target instead, and a
    FIFO must not block the reader. Only a regular file is read."""
    directory, name = os.path.split(path)
    dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dir_info = os.fstat(dir_fd)
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW, dir_fd=dir_fd)
        except OSError:
            if not _is_symlink(name, dir_fd):
                raise
            _check_symlink(path, name, dir_fd, dir_info)
            fd = os.open(name, flags, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeLog(errno.EINVAL, f"{path}: not a regular file: not read")
        if not is_private(dir_info):
            _check_shared(path, info)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_reader(path: str) -> BinaryIO:
    """:func:`open_read` as a binary file object."""
    return os.fdopen(open_read(path), "rb")


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _check_symlink(path: str, name: str, dir_fd: int, dir_info: os.stat_result) -> None:
    """Refuse a symlink someone else could have planted or could replace."""
    if is_private(dir_info):
        return
    link = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    sticky = bool(dir_info.st_mode & stat.S_ISVTX)
    if not (_trusted(link.st_uid) and _trusted(dir_info.st_uid) and sticky):
        raise UnsafeLog(errno.ELOOP, f"{path}: a symlink owned by uid {link.st_uid} in a "
                        "directory others can write: refused (it could point anywhere)")


def _check_shared(path: str, info: os.stat_result) -> None:
    if not _trusted(info.st_uid):
        raise UnsafeLog(errno.EPERM, f"{path}: owned by uid {info.st_uid} in a directory "
                        "others can write: refused (it may not be ours to write)")
    if stat.S_ISREG(info.st_mode):
        if info.st_nlink != 1:
            raise UnsafeLog(errno.EMLINK, f"{path}: has {info.st_nlink} hard links in a "
                            "directory others can write: refused")
    elif not (stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode)):
        raise UnsafeLog(errno.EINVAL, f"{path}: not a regular file: refused")


def private_dir(path: str) -> None:
    """Make ``path`` a 0700 directory of ours, or refuse (UnsafeLog) one someone else made."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeLog(errno.ENOTDIR, f"{path}: not a directory (planted?): refused; remove "
                        "it or set childlogdir")
    if info.st_uid != os.geteuid():
        raise UnsafeLog(errno.EPERM, f"{path}: owned by uid {info.st_uid}, not "
                        f"{os.geteuid()}: refused; remove it or set childlogdir")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700, follow_symlinks=False)


def rename_within(directory_fd: int, old: str, new: str) -> None:
    """Rotation's rename, by names inside one opened directory (no path is re-resolved)."""
    os.replace(old, new, src_dir_fd=directory_fd, dst_dir_fd=directory_fd)
