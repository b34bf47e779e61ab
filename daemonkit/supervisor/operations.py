"""The supervisor's control commands, as the control socket and the web page ask for them.

Runs in the asking thread (control, web): files are read here, never on the event loop;
everything that touches instances is one :meth:`Engine.call`. Errors are
:class:`.faults.SupervisorError` exceptions, turned into ``{"ok": false, "code": ...}`` by the
caller.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from . import protocol, safeopen
from .datatypes import signal_number
from .engine import Engine
from .faults import BadArguments, BadSignal, Failed, NoFile, NoSuchName, Result

#: a start or stop answers when done; its own deadline comes first, this is the backstop
LONG_CALL_S = 3600.0
#: one log read answers at most this much
MAX_LOG_READ = 1024 * 1024


class Operations:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def handle(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """Answer one control request; None if it is not one of the supervisor's."""
        command = request.get("cmd")
        handlers: dict[str, Callable[[], dict[str, Any]]] = {
            protocol.CMD_STATUS: lambda: {"ok": True,
                                          **self.status(_names(request, empty=True))},
            protocol.CMD_ACTION: lambda: self.action(_names(request), str(request.get("verb"))),
            protocol.CMD_SCALE: lambda: self.scale(request),
            protocol.CMD_RELOAD: self.reload,
            protocol.CMD_UPDATE: lambda: self.update(_names(request, "groups", empty=True)),
            protocol.CMD_REREAD: self.reread,
            protocol.CMD_AVAIL: self.avail,
            protocol.CMD_SIGNAL: lambda: self.signal(_names(request),
                                                     str(request.get("signal", ""))),
            protocol.CMD_PID: lambda: self.pid(_names(request, empty=True)),
            protocol.CMD_CLEAR: lambda: self.clear(_names(request)),
            protocol.CMD_LOG: lambda: self.log(request),
        }
        handler = handlers.get(str(command))
        return handler() if handler is not None else None

    def status(self, names: list[str] | None = None) -> dict[str, Any]:
        """Every instance; with ``names``, also ``selected``: the instances they name."""
        engine = self.engine

        def status() -> dict[str, Any]:
            answer = engine.status()
            if names:
                answer["selected"] = [i.name for i in engine.select(names)]
            return answer

        answer: dict[str, Any] = engine.call(status, 10.0)
        return answer

    def action(self, names: list[str], verb: str) -> dict[str, Any]:
        engine = self.engine
        if verb not in protocol.VERBS:
            raise BadArguments(f"unknown verb {verb!r} (start, stop or restart)")

        def act() -> Any:
            instances = engine.select(names)
            if verb == "start":
                return engine.start(instances)
            if verb == "stop":
                return engine.stop(instances)
            return engine.restart(instances)

        results: list[Result] = engine.call(act, LONG_CALL_S)
        return _summary(results, verb)

    def scale(self, request: dict[str, Any]) -> dict[str, Any]:
        program, delta = request.get("program"), request.get("delta")
        if not isinstance(program, str) or not isinstance(delta, int):
            raise BadArguments("scale needs program (str) and delta (int)")
        answer: dict[str, Any] = self.engine.call(lambda: self.engine.scale(program, delta),
                                                  60.0)
        return answer

    def reload(self) -> dict[str, Any]:
        """Read the file here, then apply the difference in the loop (one call)."""
        new = self.engine.read_file()
        summary: dict[str, Any] = self.engine.call(lambda: self.engine.reload_file(new), 60.0)
        return {"ok": True, **summary}

    def update(self, groups: list[str]) -> dict[str, Any]:
        """Like reload, for the named groups only (all when none are named)."""
        if not groups:
            return self.reload()
        new = self.engine.read_file()
        engine = self.engine

        def apply() -> dict[str, Any]:
            import dataclasses

            running = engine.config
            assert running is not None
            known = set(running.all_groups) | set(new.all_groups)
            for group in groups:
                if group not in known:
                    raise NoSuchName(group)
            programs = dict(running.programs)
            all_groups = dict(running.all_groups)
            for group in groups:
                for program in (running.all_groups[group].programs
                                if group in running.all_groups else ()):
                    programs.pop(program, None)
                all_groups.pop(group, None)
                if group in new.all_groups:
                    all_groups[group] = new.all_groups[group]
                    for program in new.all_groups[group].programs:
                        programs[program] = new.programs[program]
            composite = dataclasses.replace(running, programs=programs, all_groups=all_groups)
            summary = engine.reload_file(composite)
            engine.available = new
            return summary

        summary: dict[str, Any] = engine.call(apply, 60.0)
        return {"ok": True, **summary}

    def reread(self) -> dict[str, Any]:
        new = self.engine.read_file()
        added, changed, removed = self.engine.call(lambda: self.engine.group_diff(new), 30.0)
        return {"ok": True, "added": added, "changed": changed, "removed": removed,
                "warnings": list(new.warnings)}

    def avail(self) -> dict[str, Any]:
        engine = self.engine

        def rows() -> list[dict[str, Any]]:
            running = engine.config
            source = engine.available or running
            assert source is not None and running is not None
            found = []
            for group in source.all_groups.values():
                for program in group.programs:
                    config = source.programs[program]
                    for num in config.process_nums():
                        spec = config.instance(num)
                        found.append({"name": spec.name, "namespec": spec.namespec,
                                      "group": group.name,
                                      "in_use": group.name in running.all_groups,
                                      "autostart": config.autostart,
                                      "priority": f"{group.priority}:{config.priority}"})
            return sorted(found, key=lambda row: row["namespec"])

        return {"ok": True, "programs": engine.call(rows, 30.0)}

    def signal(self, names: list[str], name: str) -> dict[str, Any]:
        try:
            signum = signal_number(name)
        except ValueError:
            raise BadSignal(name) from None
        engine = self.engine
        results: list[Result] = engine.call(lambda: engine.signal(engine.select(names), signum),
                                            30.0)
        return _summary(results, "signal")

    def pid(self, names: list[str]) -> dict[str, Any]:
        engine = self.engine
        if not names:
            return {"ok": True, "pid": os.getpid()}

        def pids() -> list[dict[str, Any]]:
            return [{"name": i.name, "pid": engine.shown(i).pid}
                    for i in engine.select(names)]

        return {"ok": True, "instances": engine.call(pids, 30.0)}

    def clear(self, names: list[str]) -> dict[str, Any]:
        engine = self.engine
        results: list[Result] = engine.call(lambda: engine.clear_logs(engine.select(names)),
                                            30.0)
        return _summary(results, "clear")

    def log(self, request: dict[str, Any]) -> dict[str, Any]:
        """``tail``: up to ``length`` bytes of a log from ``offset`` (negative: from the
        end); the answer's ``offset`` is where the next read starts (the file's size)."""
        name, channel = request.get("name"), request.get("channel", "stdout")
        offset, length = request.get("offset", -1600), request.get("length", 1600)
        if not isinstance(name, str) or channel not in protocol.LOG_CHANNELS:
            raise BadArguments("log needs name and channel stdout|stderr")
        if not isinstance(offset, int) or not isinstance(length, int) or length < 0:
            raise BadArguments("offset and length must be integers, length >= 0")
        engine = self.engine

        def path() -> str | None:
            instances = engine.select([name])
            if len(instances) != 1:
                raise NoSuchName(f"{name} (tail one process at a time)")
            spec = instances[0].spec.stdout if channel == "stdout" else instances[0].spec.stderr
            return spec.path if spec is not None else None

        logfile: str | None = engine.call(path, 10.0)
        if logfile is None:
            raise NoFile(f"{name} has no {channel} log file")
        return {"ok": True, "path": logfile, **read_piece(logfile, offset,
                                                           min(length, MAX_LOG_READ))}


def read_piece(path: str, offset: int, length: int) -> dict[str, Any]:
    """Bytes of ``path``: from ``offset`` (negative: that many from the end) at most
    ``length``; ``offset`` in the answer is the size, ``reset`` True if the file shrank."""
    try:
        with safeopen.open_reader(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            reset = offset > size
            start = max(0, size + offset) if offset < 0 else (0 if reset else offset)
            handle.seek(start)
            data = handle.read(min(length, max(0, size - start)))
    except FileNotFoundError:
        return {"text": "", "offset": 0, "reset": True}
    except safeopen.UnsafeLog as exc:
        raise Failed(str(exc.strerror)) from None
    except OSError as exc:
        raise Failed(f"{path}: {exc.strerror}") from None
    return {"text": data.decode("utf-8", "replace"), "offset": start + len(data),
            "reset": reset}


def _names(request: dict[str, Any], key: str = "names", empty: bool = False) -> list[str]:
    names = request.get(key, [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadArguments(f"{key}: a list of strings is required")
    if not names and not empty:
        raise BadArguments(f"{key}: a non-empty list is required")
    return names


def _summary(results: list[Result], verb: str) -> dict[str, Any]:
    failed = [r for r in results if not r.ok]
    answer: dict[str, Any] = {"ok": not failed, "instances": [r.instance for r in results],
                              "results": [{**r.as_struct(), "code": r.code.name,
                                           "instance": r.instance.get("name")}
                                          for r in results]}
    if failed:
        details = []
        for result in failed:
            instance = result.instance
            extra = instance.get("error") or (result.description
                                              if result.code.name == "FAILED" else None)
            details.append(f"{instance.get('name')} {instance.get('state')}"
                           + (f" ({extra})" if extra else ""))
        answer["error"] = f"{verb} failed: {', '.join(details)}"
        answer["code"] = failed[0].code.name
    return answer
