"""Stream a CSV, validate its rows against a declared schema, and group the valid rows into jobs.

The source is a local path, a file:// URL, an http(s):// URL (urllib) or an open binary stream.
It is never loaded whole: bytes are decoded as they are read (`utf-8-sig` drops a BOM) and the
csv module, fed with `newline=""`, handles quoted fields, embedded commas, quotes and newlines,
and CRLF line ends. Standard library only: the worker image and the Airflow side both use it.

Errors name what a person has to fix:

- the source cannot be read (file not found, HTTP status, unreachable host): `SourceUnreadableError`;
- the file is empty (no header line): `EmptySourceError`;
- the header lacks a required column or repeats one: `HeaderError`;
- the bytes are not CSV/UTF-8 we can trust past that point: `MalformedCsvError` (with the line);
- bad rows (a required value missing, a value of the wrong type, too many fields) are counted and
  reported with their row and line numbers; `on_bad_rows="skip"` leaves them out, `"fail"` raises
  `BadRowsError` once the whole file was read, so the error holds the full count.

Row numbers count data rows from 1 (the header is not a row); line numbers are physical lines of
the file, where the record starts (a quoted field may span several lines).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import IO, Any, Literal

from kafka_workflows.errors import KafkaWorkflowsError

TYPES = ("string", "email", "int", "float", "bool", "date")
BAD_ROW_MODES = ("skip", "fail")
OnBadRows = Literal["skip", "fail"]
Source = str | os.PathLike[str] | IO[bytes]

# Pragmatic, not RFC 5322: one @, no spaces, a dot in the domain, nothing around the dots empty.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^[^@\s\"(),:;<>\[\\\]]+@{_LABEL}(?:\.{_LABEL})+$")
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


class CsvSourceError(KafkaWorkflowsError, ValueError):
    """The CSV cannot be imported as it is; the message names the source (and line, row, column)."""


class SourceUnreadableError(CsvSourceError):
    """The source could not be opened or read (missing file, HTTP error, network failure)."""


class EmptySourceError(CsvSourceError):
    """The source has no header line."""


class HeaderError(CsvSourceError):
    """The header does not fit the schema (a required column missing, a column repeated)."""


class MalformedCsvError(CsvSourceError):
    """The bytes stop being CSV or UTF-8 we can trust (unterminated quote, invalid UTF-8)."""


class BadRowsError(CsvSourceError):
    """Rows failed validation and `on_bad_rows` is "fail"."""

    def __init__(self, message: str, report: BadRowReport) -> None:
        super().__init__(message)
        self.report = report


# -- schema --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One column the CSV must (required) or may have, and the type its values must parse as."""

    name: str
    type: str = "string"
    required: bool = False
    max_length: int | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ValueError("a schema column needs a non-empty name")
        if self.type not in TYPES:
            raise ValueError(f"column {self.name!r}: type {self.type!r} is not one of {', '.join(TYPES)}")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"column {self.name!r}: max_length must be >= 1, got {self.max_length}")

    def parse(self, raw: str) -> Any:
        """The typed value of `raw` (already stripped, non-empty); ValueError says why not."""
        if self.max_length is not None and len(raw) > self.max_length:
            raise ValueError(f"is {len(raw)} characters long, more than {self.max_length}")
        if self.type == "string":
            return raw
        if self.type == "email":
            if len(raw) > 254 or not _EMAIL.match(raw):
                raise ValueError("is not a valid email address")
            return raw.lower()
        if self.type == "int":
            try:
                return int(raw)
            except ValueError:
                raise ValueError("is not an integer") from None
        if self.type == "float":
            try:
                number = float(raw)
            except ValueError:
                raise ValueError("is not a number") from None
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError("is not a finite number")
            return number
        if self.type == "bool":
            lowered = raw.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError("is not a boolean (true/false, yes/no, 1/0)")
        try:  # date
            return date.fromisoformat(raw).isoformat()
        except ValueError:
            raise ValueError("is not a date (YYYY-MM-DD)") from None


@dataclass(frozen=True)
class Schema:
    """The columns of a CSV. Header names match case-insensitively, surrounding spaces ignored.

    Columns of the file that the schema does not declare are ignored.
    """

    columns: tuple[Column, ...]

    def __post_init__(self) -> None:
        if not self.columns:
            raise ValueError("a schema needs at least one column")
        seen: set[str] = set()
        for column in self.columns:
            key = _norm(column.name)
            if key in seen:
                raise ValueError(f"schema declares column {column.name!r} twice")
            seen.add(key)

    @classmethod
    def of(cls, *columns: Column) -> Schema:
        return cls(tuple(columns))

    @classmethod
    def parse(cls, data: Schema | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Schema:
        """From `{"email": {"type": "email", "required": true}, "name": "string"}` or a list of column dicts."""
        if isinstance(data, Schema):
            return data
        columns: list[Column] = []
        if isinstance(data, Mapping):
            for name, spec in data.items():
                if isinstance(spec, str):
                    columns.append(Column(name, spec))
                elif isinstance(spec, Mapping):
                    columns.append(Column(name, **{k: v for k, v in spec.items() if k != "name"}))
                else:
                    raise ValueError(f"schema column {name!r}: expected a type name or an object, got {spec!r}")
        else:
            for spec in data:
                if not isinstance(spec, Mapping):
                    raise ValueError(f"schema: expected column objects, got {spec!r}")
                columns.append(Column(**spec))
        return cls(tuple(columns))

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]


def _norm(name: str) -> str:
    return name.strip().lower()


# -- reports -------------------------------------------------------------------------------
@dataclass(frozen=True)
class BadRow:
    row: int
    line: int
    reason: str
    column: str | None = None

    def __str__(self) -> str:
        where = f"row {self.row} (line {self.line})"
        return f"{where}, column {self.column!r}: {self.reason}" if self.column else f"{where}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "line": self.line, "column": self.column, "reason": self.reason}


@dataclass
class BadRowReport:
    count: int = 0
    examples: list[BadRow] = field(default_factory=list)

    def describe(self) -> str:
        if not self.count:
            return "no bad rows"
        shown = "; ".join(str(b) for b in self.examples)
        more = f" (and {self.count - len(self.examples)} more)" if self.count > len(self.examples) else ""
        return f"{self.count} bad row(s): {shown}{more}"


@dataclass(frozen=True)
class Job:
    """`rows_per_job` valid rows (fewer in the last job), with their data-row numbers."""

    index: int
    rows: list[dict[str, Any]]
    row_numbers: list[int]

    def to_message(self) -> dict[str, Any]:
        return {"rows": self.rows, "row_numbers": self.row_numbers}


# -- sources -------------------------------------------------------------------------------
def describe_source(source: Source) -> str:
    """A printable name: URLs lose their credentials and query string (tokens live there)."""
    if not isinstance(source, str | os.PathLike):
        return str(getattr(source, "name", None) or "<stream>")
    text = os.fspath(source)
    parts = urllib.parse.urlsplit(text)
    if parts.scheme in ("http", "https"):
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))
    return text


def open_source(source: Source, timeout: float = 30.0) -> IO[bytes]:
    """Open `source` for streaming reads; SourceUnreadableError names it and says why not."""
    name = describe_source(source)
    if not isinstance(source, str | os.PathLike):
        return source
    text = os.fspath(source).strip()
    if not text:
        raise SourceUnreadableError("the CSV source is empty: give a path, a file:// or an http(s):// URL")
    parts = urllib.parse.urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        request = urllib.request.Request(text, headers={"User-Agent": "kafka-workflows", "Accept": "text/csv, */*"})
        try:
            return urllib.request.urlopen(request, timeout=timeout)  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:
            exc.close()
            raise SourceUnreadableError(f"{name}: the server answered HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SourceUnreadableError(f"{name}: cannot fetch it ({reason})") from exc
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise SourceUnreadableError(f"{name}: file:// URLs must name a local file (host {parts.netloc!r})")
        path = urllib.request.url2pathname(parts.path)
    elif scheme and len(scheme) > 1:  # one letter is a Windows drive
        raise SourceUnreadableError(f"{name}: unsupported scheme {scheme!r}; use a path, file://, http:// or https://")
    else:
        path = text
    try:
        return open(path, "rb")
    except FileNotFoundError as exc:
        raise SourceUnreadableError(f"{name}: no such file") from exc
    except IsADirectoryError as exc:
        raise SourceUnreadableError(f"{name}: is a directory, not a CSV file") from exc
    except OSError as exc:
        raise SourceUnreadableError(f"{name}: cannot open it ({exc.strerror or exc})") from exc


# -- the reader ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    row: int
    line: int
    values: dict[str, Any]


class CsvJobSource:
    """Read `source` once, as a stream: `open()` checks the header, then `jobs()` (or `rows()`) yields.

        with CsvJobSource(url, schema, rows_per_job=500) as csv_jobs:
            for job in csv_jobs.jobs():
                ...
        csv_jobs.rows_read, csv_jobs.valid_rows, csv_jobs.bad.describe()

    Counters are final once the iterator is exhausted.
    """

    def __init__(self, source: Source, schema: Schema | Mapping[str, Any] | Sequence[Mapping[str, Any]], *,
                 rows_per_job: int = 500, on_bad_rows: OnBadRows = "skip", max_examples: int = 10,
                 delimiter: str = ",", timeout: float = 30.0,
                 opener: Callable[[Source, float], IO[bytes]] = open_source) -> None:
        if isinstance(rows_per_job, bool) or not isinstance(rows_per_job, int) or rows_per_job < 1:
            raise ValueError(f"rows_per_job must be an integer >= 1, got {rows_per_job!r}")
        if on_bad_rows not in BAD_ROW_MODES:
            raise ValueError(f"on_bad_rows must be one of {', '.join(BAD_ROW_MODES)}, got {on_bad_rows!r}")
        self.source = source
        self.name = describe_source(source)
        self.schema = Schema.parse(schema)
        self.rows_per_job = rows_per_job
        self.on_bad_rows = on_bad_rows
        self.max_examples = max_examples
        self.delimiter = delimiter
        self.timeout = timeout
        self._opener = opener
        self.rows_read = 0
        self.valid_rows = 0
        self.jobs_yielded = 0
        self.bad = BadRowReport()
        self.header: list[str] = []
        self._raw: IO[bytes] | None = None
        self._text: io.TextIOWrapper | None = None
        self._reader: Any = None  # csv reader object
        self._positions: list[tuple[Column, int]] = []  # schema column -> index in the file
        self._width = 0
        self._last_line = 0  # physical line the csv reader has read up to
        self._start_line = 0  # where the record in hand starts
        self._consumed = False

    # lifecycle
    def __enter__(self) -> CsvJobSource:
        return self.open()

    def __exit__(self, *_: object) -> None:
        self.close()

    def open(self) -> CsvJobSource:
        """Open the source and validate the header; raises before any row is read."""
        if self._reader is not None:
            return self
        self._raw = self._opener(self.source, self.timeout)
        try:
            self._text = io.TextIOWrapper(self._raw, encoding="utf-8-sig", errors="strict", newline="")  # type: ignore[arg-type]
            self._reader = csv.reader(self._text, delimiter=self.delimiter, strict=True)
            header = self._next_record()
            while header is not None and not any(cell.strip() for cell in header):
                header = self._next_record()  # blank lines before the header
            if header is None:
                raise EmptySourceError(f"{self.name} is empty: expected a header line naming the columns "
                                       f"({', '.join(c.name for c in self.schema.columns)})")
            self._check_header(header)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for stream in (self._text, self._raw):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
        self._text = self._raw = None

    def _check_header(self, header: list[str]) -> None:
        self.header = [cell.strip() for cell in header]
        self._width = len(header)
        where: dict[str, list[int]] = {}
        for i, cell in enumerate(self.header):
            if cell:
                where.setdefault(_norm(cell), []).append(i)
        problems = []
        positions = []
        for column in self.schema.columns:
            found = where.get(_norm(column.name), [])
            if len(found) > 1:
                problems.append(f"column {column.name!r} appears {len(found)} times "
                                f"(columns {', '.join(str(i + 1) for i in found)})")
            elif found:
                positions.append((column, found[0]))
            elif column.required:
                problems.append(f"required column {column.name!r} is missing")
            else:
                positions.append((column, -1))
        if problems:
            raise HeaderError(f"{self.name}, header (line {self._last_line}): {'; '.join(problems)}; "
                              f"the header has {self.header}")
        self._positions = positions

    def _next_record(self) -> list[str] | None:
        assert self._reader is not None
        try:
            record = next(self._reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            raise MalformedCsvError(f"{self.name}: malformed CSV at line {self._reader.line_num} ({exc}); "
                                    "check the quotes of the record starting at "
                                    f"line {self._last_line + 1}") from exc
        except UnicodeDecodeError as exc:
            raise MalformedCsvError(f"{self.name}: not UTF-8 text (invalid byte 0x{exc.object[exc.start]:02x} "
                                    f"after line {self._last_line}); save the file as UTF-8") from exc
        except OSError as exc:
            raise SourceUnreadableError(f"{self.name}: reading failed near line {self._last_line + 1} "
                                        f"({exc})") from exc
        self._start_line = self._last_line + 1
        self._last_line = self._reader.line_num
        return record  # type: ignore[no-any-return]

    # rows and jobs
    def rows(self) -> Iterator[Row]:
        """The valid rows, typed. Bad rows are counted (and raise at the end when on_bad_rows="fail")."""
        self.open()
        if self._consumed:
            raise RuntimeError(f"{self.name} was already read; a CsvJobSource streams its source once")
        self._consumed = True
        try:
            while (record := self._next_record()) is not None:
                if not any(cell.strip() for cell in record):
                    continue  # blank line
                self.rows_read += 1
                row = self._validate(record)
                if row is not None:
                    self.valid_rows += 1
                    yield row
        finally:
            self.close()
        if self.bad.count and self.on_bad_rows == "fail":
            raise BadRowsError(f"{self.name}: {self.bad.describe()}; nothing was imported "
                               "(on_bad_rows=fail; use skip to import the valid rows)", self.bad)

    def jobs(self) -> Iterator[Job]:
        """Valid rows in groups of `rows_per_job`, numbered from 0."""
        rows: list[dict[str, Any]] = []
        numbers: list[int] = []
        for row in self.rows():
            rows.append(row.values)
            numbers.append(row.row)
            if len(rows) == self.rows_per_job:
                yield self._job(rows, numbers)
                rows, numbers = [], []
        if rows:
            yield self._job(rows, numbers)

    def _job(self, rows: list[dict[str, Any]], numbers: list[int]) -> Job:
        job = Job(self.jobs_yielded, rows, numbers)
        self.jobs_yielded += 1
        return job

    def _validate(self, record: list[str]) -> Row | None:
        row_number, line = self.rows_read, self._start_line
        if len(record) > self._width:
            extra = [cell for cell in record[self._width:] if cell.strip()]
            if extra:
                return self._bad(BadRow(row_number, line, f"has {len(record)} fields but the header has "
                                        f"{self._width} (an unquoted delimiter?)"))
        values: dict[str, Any] = {}
        for column, index in self._positions:
            raw = record[index].strip() if 0 <= index < len(record) else ""
            if not raw:
                if column.required:
                    return self._bad(BadRow(row_number, line, "required value is missing", column.name))
                values[column.name] = None
                continue
            try:
                values[column.name] = column.parse(raw)
            except ValueError as exc:
                shown = raw if len(raw) <= 60 else raw[:57] + "..."
                return self._bad(BadRow(row_number, line, f"{shown!r} {exc}", column.name))
        return Row(row_number, line, values)

    def _bad(self, bad: BadRow) -> None:
        self.bad.count += 1
        if len(self.bad.examples) < self.max_examples:
            self.bad.examples.append(bad)
        return None

    def summary(self) -> dict[str, Any]:
        """Counts so far (final after the iterator is exhausted), JSON-ready."""
        return {"source": self.name, "rows": self.rows_read, "valid_rows": self.valid_rows,
                "bad_rows": self.bad.count, "bad_examples": [b.to_dict() for b in self.bad.examples],
                "jobs": self.jobs_yielded, "rows_per_job": self.rows_per_job}
