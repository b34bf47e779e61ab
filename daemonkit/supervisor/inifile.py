"""The one reader of supervisor INI files: sections and raw values, the way supervisord reads them.

supervisord reads its main file and every ``[include]``d file into one
``RawConfigParser(strict=False, inline_comment_prefixes=(';', '#'))``. What follows from that,
and what this reader reproduces:

* a key repeated in a section: the last one wins; a section repeated (in one file or across
  included files): its keys are merged, later files winning;
* `` ;`` and `` #`` after whitespace start a comment (``command = sleep 9 # why`` runs
  ``sleep 9``); keys are case-insensitive; indented lines continue a value;
* ``[DEFAULT]`` keys apply to every section that lacks them;
* ``[include] files`` is read from the main file only, after ``%(here)s``/``%(ENV_X)s``
  expansion, each pattern relative to the main file's directory;
* ``%(here)s`` in a value is the directory of the file that holds the value.

Values come out unexpanded otherwise (``%(program_name)s`` and friends are for the loader,
which knows the section). The reader never looks at what a section means.
"""

from __future__ import annotations

import configparser
import glob
import itertools
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..errors import ConfigError
from . import limits
from .expand import ExpansionError, expand

#: a config file larger than this is refused: it is not a config file
MAX_FILE_BYTES = limits.MAX_FILE_BYTES
HERE = "%(here)s"
_HEADER_RE = re.compile(r"^\[[^\]]+\]\s*([;#].*)?$")
_KEY_RE = re.compile(r"[=:]")
#: _HEADER_RE over a whole text: where each section starts, and its name
_HEADERS_RE = re.compile(r"^\[([^\]\n]+)\][ \t\r\f\v]*(?:[;#][^\n]*)?$", re.MULTILINE)
_NO_DEFAULTS = "\0daemonkit-no-defaults"  # [DEFAULT] is handled here, not by configparser


@dataclass(frozen=True)
class Value:
    text: str
    file: str  # the file the value was read from


@dataclass
class Section:
    name: str
    file: str  # the file that opened the section first
    values: dict[str, Value] = field(default_factory=dict)


@dataclass
class Document:
    path: str  # the main file, absolute
    files: list[str] = field(default_factory=list)
    sections: dict[str, Section] = field(default_factory=dict)  # in order of appearance
    defaults: dict[str, Value] = field(default_factory=dict)
    keys_of: KeysOf | None = None  # see read()
    warnings: list[str] = field(default_factory=list)
    size: int = 0  # characters read from all files, bounded by limits.MAX_TOTAL_BYTES

    def get(self, section: str, key: str) -> Value | None:
        """The section's value, else ``[DEFAULT]``'s, else None."""
        found = self.sections.get(section)
        if found is not None and key in found.values:
            return found.values[key]
        return self.defaults.get(key)

    def keys(self, section: str) -> set[str]:
        found = self.sections.get(section)
        return set(found.values) if found else set()


#: which keys of a section to keep (None: all of them; DROP: not the section either), for a
#: reader that needs few
KeysOf = Callable[[str], "frozenset[str] | None"]
DROP = frozenset({"\0drop the section"})


def read(path: str, base_values: Mapping[str, object] | None = None,
         includes: bool = True, lenient: bool = False, keys_of: KeysOf | None = None
         ) -> Document:
    """Read ``path`` and its includes; ConfigError (one line) if a file cannot be parsed.

    ``base_values``: what ``%(...)s`` may name in ``[include] files`` besides ``here``
    (``ENV_X``, ``host_node_name``). ``includes`` False: the main file alone. ``lenient``:
    bytes that are not UTF-8 (and NULs) read as U+FFFD, so that ``status`` and ``stop``
    still find the pidfile of a supervisor whose file was broken after it started.
    ``keys_of``: only these keys of each section are parsed (the client's settings of a
    2,000-program file: one key of each program, the parse a third of the time)."""
    path = os.path.abspath(path)
    document = Document(path)
    document.keys_of = keys_of
    _merge(document, path, lenient)
    include = document.sections.get("include")
    if include is not None and includes:
        _read_includes(document, include, base_values or {})
    default = document.sections.pop("DEFAULT", None)
    if default is not None:
        document.defaults = dict(default.values)
    return document


def _read_includes(document: Document, include: Section, base_values: Mapping[str, object]
                   ) -> None:
    main_here = os.path.dirname(document.path)
    files = include.values.get("files")
    if files is None:
        raise ConfigError(f"{include.file}: [include] has no files setting")
    try:
        patterns = expand(files.text, {**base_values, "here": main_here}, "[include] files")
    except ExpansionError as exc:
        raise ConfigError(f"{files.file}: [include] files: {exc}") from None
    for pattern in patterns.split():
        full = os.path.join(main_here, pattern)
        # at most one past the limit: a glob like /proc/*/*/* must not be walked to its end
        matches = sorted(itertools.islice(glob.iglob(full), limits.MAX_FILES + 1))
        if len(document.files) + len(matches) > limits.MAX_FILES:
            raise ConfigError(f"{files.file}: [include] files: {pattern} adds more than "
                              f"{limits.MAX_FILES} files (the limit)")
        if not matches:
            document.warnings.append(f"{document.path}: [include] files: {pattern} matches "
                                     "no file")
        for included in matches:
            if os.path.abspath(included) == document.path:
                continue  # supervisord would read it twice: same values, nothing new
            before = dict(include.values)
            _merge(document, os.path.abspath(included))
            if include.values != before:
                include.values = before  # supervisord reads [include] once, from the main file
                document.warnings.append(f"{included}: [include] ignored: only the main file's "
                                         "[include] is read (as supervisord does)")


def _merge(document: Document, path: str, lenient: bool = False) -> None:
    text = _read_text(path, lenient)
    document.size += len(text)
    if document.size > limits.MAX_TOTAL_BYTES:
        raise ConfigError(f"{path}: cannot read: the files read so far exceed "
                          f"{limits.MAX_TOTAL_BYTES} bytes in all (the limit)")
    parser = _parse(path, text if document.keys_of is None else _only(text, document.keys_of))
    document.files.append(path)
    here = os.path.dirname(path)
    for number, line in _bad_headers(text):
        document.warnings.append(f"{path}: line {number}: {line!r} is not a section header "
                                 "(missing ']'?): read as a key of the section above it")
    for name in parser.sections():
        section = document.sections.setdefault(name, Section(name, path))
        for key, raw in parser.items(name, raw=True):
            if len(raw) > limits.MAX_VALUE_BYTES:
                raise ConfigError(f"{path}: [{name}] {key}: value longer than "
                                  f"{limits.MAX_VALUE_BYTES} bytes (the limit)")
            section.values[key] = Value(raw.replace(HERE, here), path)


def _only(text: str, keys_of: KeysOf) -> str:
    """``text`` with only the lines of the keys ``keys_of`` wants (and their continuation
    lines): every section header stays, so sections exist as before, unless ``keys_of``
    says DROP. Sections are cut at their headers first: a kept or dropped section costs
    no look at its lines."""
    headers = list(_HEADERS_RE.finditer(text))
    kept = [text[:headers[0].start()] if headers else text]  # before the first header
    for index, header in enumerate(headers):
        end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
        wanted = keys_of(header.group(1))
        if wanted is DROP:
            continue
        if wanted is None:
            kept.append(text[header.start():end])
            continue
        kept.append(header.group(0) + "\n")
        keeping = False  # the key whose continuation lines these are is kept
        for line in text[header.end():end].splitlines():
            if line[:1].isspace() and line.strip():
                if keeping:
                    kept.append(line + "\n")
            else:
                keeping = _KEY_RE.split(line, 1)[0].strip().lower() in wanted
                if keeping:
                    kept.append(line + "\n")
    return "".join(kept)


def _parse(path: str, text: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(
        inline_comment_prefixes=(";", "#"), strict=False, interpolation=None,
        default_section=_NO_DEFAULTS)
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        raise ConfigError(f"{path}: {' '.join(str(exc).split())}") from None
    return parser


def _read_text(path: str, lenient: bool = False) -> str:
    """A regular file of bounded size, UTF-8: a FIFO or /dev/zero must not hang the reader."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # not even opened: a device's open acts
            raise ConfigError(f"{path}: cannot read: not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: cannot read: not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: cannot read: larger than {MAX_FILE_BYTES} bytes")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if lenient:
        return data.decode("utf-8", "replace").replace("\0", "\ufffd")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text") from None
    nul = data.find(b"\0")
    if nul >= 0:  # no path, argv or environment can hold one: refused here, not at spawn
        line = data[:nul].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: NUL character (not allowed in a config)")
    return text


def _bad_headers(text: str) -> list[tuple[int, str]]:
    """Lines that look like a section header but are not one (configparser reads
    ``[program:b`` as the key ``[program`` of the section above)."""
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)
            if line.startswith("[") and not _HEADER_RE.match(line)]
