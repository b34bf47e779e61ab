"""Text from elsewhere, made safe to print on the terminal of whoever runs a command.

A daemon's messages carry what it did not write itself: an exception raised on a peer's
data, a service's ``status_info()`` values, an exit record a stopped daemon left. An escape
sequence among them (``ESC ] 0 ; ... BEL`` retitles the window, others move the cursor or
rewrite what the screen shows, U+202E turns the rest of the line around) would act on the
administrator's terminal instead of being read; escaped, it is read, as ``\\x1b``.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every character a terminal would not print as itself (controls, format
    characters such as bidi overrides) written as its Python escape."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)
