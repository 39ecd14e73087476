"""Text that leaves the program safely: CSV cells, terminal output, file names.

* **CSV formula injection.** A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or
  a carriage return is run as a formula when a spreadsheet opens the CSV
  (``=HYPERLINK(...)``, ``=cmd|...``). As OWASP advises ("CSV Injection"), such a cell
  is written with a leading single quote, which spreadsheets show as text; numbers
  (``-0.5``) are left alone. :func:`csv_unescape` undoes it when the project reads its
  own CSV back (``manifest.csv``), so ids and paths round-trip unchanged.
* **Terminal output.** File names can hold ESC sequences and other control characters
  that would move the cursor, recolour or retitle the terminal; :func:`terminal_text`
  shows them as ``\\x1b`` escapes and escapes rich markup (``[bold]``).
* **Undecodable file names.** On POSIX a file name is bytes; Python decodes the ones
  that are not UTF-8 with lone surrogates (``surrogateescape``), which no UTF-8 writer
  accepts. :func:`display_path` turns those bytes into ``\\xff`` escapes so a CSV or
  JSON file is always written.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pandas as pd

FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
"""Leading characters that make a spreadsheet treat a cell as a formula."""

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def csv_escape(value: Any) -> Any:
    """``value`` with a leading ``'`` if it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) and not _NUMBER.match(value):
        return "'" + value
    return value


def csv_unescape(value: Any) -> Any:
    """Undo :func:`csv_escape` (a leading ``'`` before a formula character)."""
    if isinstance(value, str) and len(value) > 1 and value[0] == "'" and \
            value[1:].startswith(FORMULA_PREFIXES):
        return value[1:]
    return value


def escape_frame(df: Any) -> Any:
    """A copy of a pandas DataFrame with :func:`csv_escape` applied to its text columns."""
    out = df.copy()
    for col in out.columns:
        if _is_text(out[col]):
            out[col] = out[col].map(lambda v: csv_escape(display_path(v) if isinstance(v, str) else v))
    return out


def _is_text(column: Any) -> bool:

    return column.dtype == object or pd.api.types.is_string_dtype(column.dtype)


def unescape_frame(df: Any) -> Any:
    """Undo :func:`escape_frame` on a frame read back with ``dtype=str``."""
    out = df.copy()
    for col in out.columns:
        if _is_text(out[col]):
            out[col] = out[col].map(csv_unescape)
    return out


def display_path(text: str | os.PathLike[str]) -> str:
    """A path as text any UTF-8 writer accepts: undecodable bytes become ``\\xNN``."""
    s = os.fspath(text)
    if isinstance(s, bytes):
        return s.decode("utf-8", "backslashreplace")
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        pass
    try:  # bytes the file system gave (surrogateescape) → \xNN
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # other lone surrogates → \udcNN
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def terminal_text(text: Any, *, markup: bool = True) -> str:
    """Text safe to print on a terminal: control characters as ``\\xNN``, rich markup escaped.

    Args:
        text: Anything; converted with ``str``.
        markup: Also escape rich markup (``[bold]`` → ``\\[bold]``), for strings printed
            through a rich console with markup on.
    """
    s = display_path(text) if isinstance(text, str | os.PathLike) else str(text)
    s = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", s)
    if markup:
        from rich.markup import escape

        s = escape(s)
    return s
