"""Bytes -> text lines with hard limits, so no input can make the CSV reader hold more than a bound.

The csv module pulls whole lines from what it reads; a file without line breaks (`/dev/zero`, a
1 GB single line) would be one line held whole. `BoundedLines` reads fixed-size chunks, splits
them at CR, LF or CRLF itself and refuses a line longer than `Limits.max_line_bytes`, and the
bytes of one record (a quoted field may span lines) beyond `Limits.max_record_bytes`, before they
pile up. Memory stays within about max_line_bytes + one chunk whatever the input.

Lines are decoded strictly as UTF-8 (a leading BOM is dropped); a line is always whole, so a
multi-byte character is never cut in two. Errors carry line numbers and limits, never content.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

BOM = b"\xef\xbb\xbf"
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """The most one CSV may ask of the reader's memory; each breach is a clear error."""

    max_line_bytes: int = 1024 * 1024  # one physical line, line break included
    max_record_bytes: int = 4 * 1024 * 1024  # one record (a quoted field may span several lines)
    max_columns: int = 1024  # fields of one record (the header included)
    max_field_chars: int = 64 * 1024  # characters of one field (the csv module's own limit is 131072)

    def __post_init__(self) -> None:
        for name in ("max_line_bytes", "max_record_bytes", "max_columns", "max_field_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CSV limit {name} must be an integer >= 1, got {value!r}")
        import csv

        if self.max_field_chars > csv.field_size_limit():
            raise ValueError(f"CSV limit max_field_chars={self.max_field_chars} is above the csv module's "
                             f"field size limit ({csv.field_size_limit()})")


class LimitExceeded(Exception):
    """A limit was reached at `line`: `what` names it ("line", "record"), `limit` its value in bytes."""

    def __init__(self, what: str, line: int, limit: int) -> None:
        super().__init__(f"{what} at line {line} is longer than {limit} bytes")
        self.what, self.line, self.limit = what, line, limit


class NotUtf8(Exception):
    """Line `line` is not valid UTF-8 (which byte is not said: it is content)."""

    def __init__(self, line: int) -> None:
        super().__init__(f"line {line} is not UTF-8")
        self.line = line


class BoundedLines:
    """Iterate decoded lines (line breaks kept, as the csv module wants them) of a binary stream.

    `start_record()` marks where the next record starts, so one record's bytes are bounded too.
    """

    def __init__(self, stream: IO[bytes], limits: Limits, chunk: int = CHUNK) -> None:
        self._stream = stream
        self._limits = limits
        self._chunk = chunk
        self.lines = 0  # physical lines handed out
        self._record_bytes = 0
        self._first = True

    def start_record(self) -> None:
        self._record_bytes = 0

    def __iter__(self) -> Iterator[str]:
        limit = self._limits.max_line_bytes
        pending = b""
        while True:
            chunk = self._stream.read(self._chunk)
            if not chunk:
                break
            if self._first:
                pending, self._first = pending + chunk, len(pending + chunk) < len(BOM)
                if not self._first and pending.startswith(BOM):
                    pending = pending[len(BOM):]
                if self._first:
                    continue
                data = pending
            else:
                data = pending + chunk
            parts = data.splitlines(keepends=True)
            pending = b""
            # The last part may go on in the next chunk (no line break yet, or a CR whose LF follows).
            if parts and (not parts[-1].endswith((b"\n", b"\r")) or parts[-1].endswith(b"\r")):
                pending = parts.pop()
            for part in parts:
                yield self._line(part, limit)
            if len(pending) > limit:
                raise LimitExceeded("line", self.lines + 1, limit)
        if pending:
            yield self._line(pending, limit)

    def _line(self, raw: bytes, limit: int) -> str:
        self.lines += 1
        if len(raw) > limit:
            raise LimitExceeded("line", self.lines, limit)
        self._record_bytes += len(raw)
        if self._record_bytes > self._limits.max_record_bytes:
            raise LimitExceeded("record", self.lines, self._limits.max_record_bytes)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise NotUtf8(self.lines) from None
