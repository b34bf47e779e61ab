"""The client side of the supervisor's control socket: ask, then print what the answer says.

Every command of ``daemonkit supervise -c FILE`` that talks to a running supervisor goes
through :class:`Client`. Trouble is typed: no socket or nobody listening is
:class:`NotListening` (the supervisor is not running), a socket we may not open is
:class:`ControlDenied`, a refusal with a fault code is that fault's
:class:`.faults.SupervisorError`; the printing functions map them to exit codes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from .. import control
from ..errors import DaemonkitError, PrivilegeError
from ..exitcodes import Exit
from ..printable import printable
from ..process import format_duration
from . import protocol
from .datatypes import signal_name
from .faults import Fault, NoSuchName, SupervisorError

PROG = "daemonkit-supervisor"
MAX_REPLY = 16 * 1024 * 1024


class NotListening(DaemonkitError):
    """No supervisor answers on the control socket: it is not running."""

    exit_code = Exit.NOT_RUNNING


class ControlDenied(PrivilegeError):
    """The control socket exists but this user may not use it."""


class NoAnswer(DaemonkitError):
    """The supervisor did not answer in time, or answered garbage."""


class Client:
    def __init__(self, path: str) -> None:
        self.path = path

    def ask(self, message: dict[str, Any], timeout_s: float = 30.0) -> dict[str, Any]:
        """One request, one JSON answer (``ok`` false included: see :meth:`call`)."""
        try:
            answer, fds = control.exchange(self.path, message, timeout_s, limit=MAX_REPLY)
        except control.ControlAbsent:
            raise NotListening(f"is not running (nobody listens on {self.path})") from None
        except control.ControlDenied:
            raise ControlDenied(f"permission denied on {self.path}") from None
        except control.ControlError as exc:
            raise NoAnswer(str(exc)) from None
        for fd in fds:  # the supervisor sends none; never keep what a stranger might
            os.close(fd)
        if not answer.get("ok") and "code" not in answer and answer.get("state") == "stopping":
            # the core refuses every command of a daemon that is stopping ("cannot
            # supervisor-reload: stopping"): it is supervisord's SHUTDOWN_STATE
            return {**answer, "code": Fault.SHUTDOWN_STATE.name,
                    "error": "the supervisor is shutting down"}
        return answer

    def call(self, command: str, timeout_s: float = 30.0, **fields: Any) -> dict[str, Any]:
        """:meth:`ask`, and a refusal raised as its :class:`SupervisorError`."""
        answer = self.ask({"cmd": command, **fields}, timeout_s)
        protocol.raise_for(answer)
        return answer


def complain(text: str) -> None:
    print(printable(f"{PROG}: {text}"), file=sys.stderr, flush=True)


def guarded(action: Callable[[], int]) -> int:
    """Run one client command; its typed failures become one line and an exit code."""
    try:
        return action()
    except NoSuchName as exc:
        complain(f"no such program or instance: {exc.detail}")
        return int(Exit.NOT_RUNNING_STATUS)
    except SupervisorError as exc:
        complain(exc.text)
        return int(Exit.FAILURE)
    except DaemonkitError as exc:
        complain(str(exc))
        return int(exc.exit_code)


# -- status ---------------------------------------------------------------------------------


def exit_text(status: object) -> str:
    """The EXIT column: an exit code, or the signal that killed the process."""
    if not isinstance(status, int):
        return "-"
    return signal_name(status) if status < 0 else str(status)


def print_status(reply: dict[str, Any], selected: list[dict[str, Any]], names: list[str],
                 as_json: bool, header: bool) -> int:
    # processes of removed programs or instances: out of the configuration, still running
    # (their stopwaitsecs may be long), so still shown
    removed: list[dict[str, Any]] = reply.get("removed", []) if header else []
    if as_json:
        print(json.dumps({"pid": reply.get("pid"), "uptime_s": reply.get("uptime_s"),
                          "config": reply.get("config"), "programs": selected,
                          **({"removed": removed} if header else {})}))
    else:
        if header:
            uptime = reply.get("uptime_s")
            up = f", up {format_duration(uptime)}" if isinstance(uptime, (int, float)) else ""
            print(f"{PROG} is running (pid {reply.get('pid')}{up}), config {reply.get('config')}")
        rows = [("NAME", "STATE", "PID", "UPTIME", "RESTARTS", "EXIT")]
        for p in [*selected, *removed]:
            rows.append((p["name"], p["state"], str(p["pid"] or "-"),
                         format_duration(p["uptime_s"]) if p["uptime_s"] is not None else "-",
                         str(p["restarts"]), exit_text(p["exit_status"])))
        widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
        for row in rows:
            print(printable("  ".join(cell.ljust(width) for cell, width
                                      in zip(row, widths, strict=True)))
                  .rstrip())
        for p in selected:  # below the table: its columns stay what scripts expect
            if p.get("error"):
                print(printable(f"{p['name']}: {p['error']}"))
            if p.get("waiting"):
                print(printable(f"{p['name']}: {p['waiting']}"))
        for p in removed:
            print(printable(f"{p['name']}: removed, {p['state'].lower()}"))
        for name in names:
            if not any(name in (p["name"], p["program"]) for p in selected) and (
                    name in reply.get("program_names", [])):
                print(f"{name}: no instances (scaled to 0)")
    if names and (not selected or any(p["state"] != "RUNNING" for p in selected)):
        return int(Exit.NOT_RUNNING_STATUS)
    return int(Exit.OK)


def instance_line(instance: dict[str, Any]) -> str:
    pid = f" (pid {instance['pid']})" if instance.get("pid") else ""
    return f"{instance['name']}: {instance['state']}{pid}"


def print_action(reply: dict[str, Any]) -> int:
    for instance in reply.get("instances", []):
        print(printable(instance_line(instance)))
    if not reply.get("ok"):
        complain(str(reply.get("error", "refused")))
        return int(Exit.FAILURE)
    return int(Exit.OK)


def print_reload(reply: dict[str, Any], verb: str = "reload") -> int:
    for warning in reply.get("warnings", []):
        complain(f"warning: {warning}")
    for key in ("added", "changed", "removed"):
        print(f"{key}: {', '.join(reply.get(key, [])) or '-'}")
    scaled = reply.get("scaled", {})
    print("scaled: " + (", ".join(f"{name} {old}->{new}" for name, (old, new)
                                  in sorted(scaled.items())) or "-"))
    for note in reply.get("notes", []):
        print(printable(f"note: {note}"))
    return int(Exit.OK)


# -- the supervisorctl-like verbs ------------------------------------------------------------


def reread(client: Client) -> int:
    reply = client.call(protocol.CMD_REREAD, 60.0)
    for warning in reply.get("warnings", []):
        complain(f"warning: {warning}")
    changes = {**{n: "available" for n in reply["added"]},
               **{n: "changed" for n in reply["changed"]},
               **{n: "disappeared" for n in reply["removed"]}}
    for name in sorted(changes):
        print(f"{name}: {changes[name]}")
    if not changes:
        print("No config updates to processes")
    return int(Exit.OK)


def update(client: Client, groups: list[str]) -> int:
    reply = client.call(protocol.CMD_UPDATE, 90.0, groups=groups)
    return print_reload(reply, "update")


def avail(client: Client) -> int:
    reply = client.call(protocol.CMD_AVAIL, 30.0)
    for row in reply["programs"]:
        print(f"{row['namespec']:<32} {'in use' if row['in_use'] else 'avail':<9} "
              f"{'auto' if row['autostart'] else 'manual':<9} {row['priority']}")
    return int(Exit.OK)


def signal_names(client: Client, signal: str, names: list[str]) -> int:
    reply = client.call(protocol.CMD_SIGNAL, 30.0, names=names, signal=signal)
    return _print_results(reply, "signalled")


def clear(client: Client, names: list[str]) -> int:
    reply = client.call(protocol.CMD_CLEAR, 30.0, names=names)
    return _print_results(reply, "cleared")


def _print_results(reply: dict[str, Any], done: str) -> int:
    code = int(Exit.OK)
    for result in reply.get("results", []):
        name = result.get("instance")
        if result.get("code") == Fault.SUCCESS.name:
            print(f"{name}: {done}")
        else:
            print(printable(f"{name}: ERROR ({result.get('description')})"))
            code = int(Exit.FAILURE)
    return code


def pid(client: Client, names: list[str]) -> int:
    reply = client.call(protocol.CMD_PID, 30.0, names=names)
    if not names:
        print(reply["pid"])
        return int(Exit.OK)
    code = int(Exit.OK)
    for instance in reply["instances"]:
        print(instance["pid"] or 0)
        if not instance["pid"]:
            code = int(Exit.NOT_RUNNING)
    return code


def tail(client: Client, name: str, channel: str, follow: bool, length: int, *,
         poll_s: float = 0.2, rounds: int | None = None) -> int:
    """The last ``length`` bytes, then (``follow``) what is appended, until interrupted."""
    reply = client.call(protocol.CMD_LOG, 30.0, name=name, channel=channel, offset=-length,
                        length=length)
    sys.stdout.write(reply["text"])
    sys.stdout.flush()
    offset = reply["offset"]
    done = 0
    try:
        while follow and (rounds is None or done < rounds):
            time.sleep(poll_s)  # a client's poll of a file, like `tail -f`
            done += 1
            reply = client.call(protocol.CMD_LOG, 30.0, name=name, channel=channel,
                                offset=offset, length=1024 * 1024)
            if reply["reset"]:
                sys.stdout.write("==> log truncated or rotated <==\n")
            sys.stdout.write(reply["text"])
            sys.stdout.flush()
            offset = reply["offset"]
    except KeyboardInterrupt:
        print()
    return int(Exit.OK)
