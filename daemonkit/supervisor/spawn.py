"""Creating a child process here: ``posix_spawn`` where it can, fork+exec where it must.

The supervisor's programs are normally made by the spawn helper (:mod:`.spawner`); this
module is what the supervisor falls back on without one, and describes a child for both.

Forking the supervisor copies its page tables and, with a ``preexec_fn``, runs Python in the
child before ``exec``: 5-15 ms per child at 2,000 programs, so starting them all took
seconds and every respawn paid it. ``posix_spawn`` (glibc: ``clone(CLONE_VM|CLONE_VFORK)``)
copies nothing and runs no Python in the child: 1-2 ms. It can give the child its fds
(file actions), a new session, default signal dispositions and an empty signal mask, but
not a working directory (Python < 3.13), a umask, another user or ``PR_SET_PDEATHSIG``.

``PR_SET_PDEATHSIG`` is what makes the programs die with a SIGKILLed supervisor, so the fast
way runs the command through util-linux's ``setpriv --pdeathsig TERM --``, which sets it and
execs the command in the same process (the pid the supervisor holds is the program's). That
second ``exec`` is paid by the child, after ``posix_spawn`` returned, not by the loop.
Without a working ``setpriv``, and for a request that needs a directory, a umask or another
user, the child is forked as before (``subprocess.Popen``, its ``preexec_fn`` setting the
parent-death signal): :func:`spawn` picks the way, callers only describe the child.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

#: ``stderr=STDOUT``: the child's stderr is its stdout
STDOUT = -2
_PR_SET_PDEATHSIG = 1
#: the process's own symbols, libc's prctl among them (ctypes.util.find_library would pull in
#: tempfile, shutil, bz2, lzma and random: 2 MB of RSS for a name we know)
_libc = ctypes.CDLL(None, use_errno=True)
_SETPRIV_PATHS = ("/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv", "/sbin/setpriv")
#: dispositions Python changes for itself (SIGPIPE ignored) that a program must not inherit
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTSTP, signal.SIGTTIN,
                    signal.SIGTTOU)


@dataclass(frozen=True)
class SpawnRequest:
    """Everything about the child, nothing about how it is made.

    ``stdin``/``stdout``/``stderr``: an fd of the supervisor's that becomes the child's fd 0,
    1 or 2 (None: /dev/null; ``stderr=STDOUT``: the same as stdout). The supervisor's own fds
    are all close-on-exec (Python's default), so the child gets these three and nothing
    else."""

    executable: str  # the resolved file exec'd (argv[0] is what the program sees)
    argv: Sequence[str]
    env: Mapping[str, str]
    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None
    cwd: str | None = None
    uid: int | None = None
    gid: int | None = None
    groups: Sequence[int] | None = None
    umask: int | None = None  # None: the supervisor's
    new_session: bool = True  # its own session and process group (pgid == pid)
    pdeathsig: int | None = signal.SIGTERM  # sent to it when the supervisor dies

    def needs_fork(self) -> bool:
        """What ``posix_spawn`` cannot do for it."""
        return (self.cwd is not None or self.uid is not None or self.gid is not None
                or self.groups is not None or self.umask is not None)


@dataclass
class Child:
    """A started child. ``way`` says how it was made ("posix_spawn" or "fork"); ``helper``:
    by the spawn helper (:mod:`.spawner`), whose child it is, so its exit comes from there."""

    pid: int
    way: str
    popen: subprocess.Popen[bytes] | None = None
    helper: bool = False

    def reaped(self, code: int) -> None:
        """The caller waited for it: Popen must not wait again (nor reap a reused pid)."""
        if self.popen is not None:
            self.popen.returncode = code
            self.popen = None


class _Setpriv:
    """util-linux's setpriv, if it is here and knows ``--pdeathsig`` (2.33, 2018): asked
    once, the first time it is needed."""

    def __init__(self) -> None:
        self.checked = False
        self.path: str | None = None

    def find(self) -> str | None:
        if not self.checked:
            self.checked = True
            self.path = self._probe()
        return self.path

    @staticmethod
    def _probe() -> str | None:
        for path in _SETPRIV_PATHS:
            if not os.access(path, os.X_OK):
                continue
            try:
                pid = os.posix_spawn(path, [path, "--pdeathsig", "TERM", "--", path,
                                            "--version"], {}, file_actions=_null_stdio())
                _, status = os.waitpid(pid, 0)
            except OSError:
                continue
            if os.waitstatus_to_exitcode(status) == 0:
                return path
        return None


_setpriv = _Setpriv()
_devnull: int | None = None
_sealed = False


def _seal_inherited_fds() -> None:
    """Make every fd above 2 close-on-exec, once: Popen's close_fds closes them in each
    child, posix_spawn cannot (Python < 3.13 has no closefrom action). What Python opens
    is close-on-exec already; this catches what the supervisor inherited (a stray fd of
    whoever started it), which would otherwise leak into every program."""
    global _sealed  # once per process: listing 10,000 fds per spawn would cost ms
    if _sealed:
        return
    _sealed = True
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)
            except OSError:
                continue  # the fd listdir itself used, closed since


def _null() -> int:
    global _devnull  # opened once and kept: a spawn must not open a file each time
    if _devnull is None:
        _devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    return _devnull


def _null_stdio() -> list[tuple[int, int, int]]:
    return [(os.POSIX_SPAWN_DUP2, _null(), fd) for fd in (0, 1, 2)]


def fast_way_available() -> bool:
    """Whether requests that do not need a fork get ``posix_spawn`` here."""
    return _setpriv.find() is not None


def spawn(request: SpawnRequest) -> Child:
    """Start the child; OSError (or SubprocessError on the fork way) if it cannot be."""
    setpriv = None
    if request.pdeathsig is not None:
        setpriv = _setpriv.find()
    if request.needs_fork() or (request.pdeathsig is not None and setpriv is None):
        return _fork(request)
    return _posix_spawn(request, setpriv)


def _posix_spawn(request: SpawnRequest, setpriv: str | None) -> Child:
    _seal_inherited_fds()
    sources = [request.stdin, request.stdout,
               request.stdout if request.stderr == STDOUT else request.stderr]
    # a source among 0-2 could be overwritten by an earlier dup2: move it out of the way
    moved = [os.dup(fd) if fd is not None and fd < 3 else None for fd in sources]
    try:
        actions = [(os.POSIX_SPAWN_DUP2, moved[n] if moved[n] is not None else
                    (_null() if fd is None else fd), n) for n, fd in enumerate(sources)]
        argv = list(request.argv)
        if setpriv is not None:
            # setpriv execvp()s its first word: the program's argv[0] if a PATH search gives
            # the same file (it is the child's PATH resolve_command searched), else the file
            first = argv[0] if "/" not in argv[0] and request.env.get("PATH") else (
                request.executable)
            executable = setpriv
            argv = [setpriv, "--pdeathsig", signal.Signals(request.pdeathsig or 15).name[3:],
                    "--", first, *argv[1:]]
        else:
            executable = request.executable
        pid = os.posix_spawn(executable, argv, request.env, file_actions=actions,
                             setsid=request.new_session, setsigdef=_DEFAULT_SIGNALS,
                             setsigmask=())
    finally:
        for fd in moved:
            if fd is not None:
                os.close(fd)
    return Child(pid, "posix_spawn")


def _fork(request: SpawnRequest) -> Child:
    stdin = subprocess.DEVNULL if request.stdin is None else request.stdin
    stdout = subprocess.DEVNULL if request.stdout is None else request.stdout
    if request.stderr == STDOUT:
        stderr = subprocess.STDOUT
    else:
        stderr = subprocess.DEVNULL if request.stderr is None else request.stderr
    preexec = None if request.pdeathsig is None else _pdeathsig(os.getpid(), request.pdeathsig)
    popen = subprocess.Popen(
        list(request.argv), executable=request.executable,
        stdin=stdin, stdout=stdout, stderr=stderr, cwd=request.cwd, env=dict(request.env),
        start_new_session=request.new_session, user=request.uid, group=request.gid,
        extra_groups=None if request.groups is None else list(request.groups),
        umask=-1 if request.umask is None else request.umask,
        # a preexec_fn runs Python in the child of a threaded process: ours is one prctl,
        # and the at-fork hooks it brings along (daemonkit.runtime's: close descriptors,
        # reset signal handlers, restore the signal mask) take no lock either
        preexec_fn=preexec,  # noqa: PLW1509
    )
    return Child(popen.pid, "fork", popen)


def _pdeathsig(parent_pid: int, signum: int) -> Callable[[], None]:
    """The only preexec_fn: one prctl, then make sure the parent did not die before it."""

    def preexec() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signum)

    return preexec
