"""Validate a CSV stream against a declared schema and group the valid rows into jobs.

The core reads a binary stream (or a local path, for the CLI and tests); where the bytes come from
(object storage, http(s)) and whether that place may be read at all is the caller's business (the
Airflow side: kafka_workflows_airflow.sources, which applies the allow-list). The stream is never
loaded whole: `csv_lines.BoundedLines` hands the csv module lines of at most `Limits.max_line_bytes`,
records of at most `max_record_bytes`; records are checked for `max_columns` and fields for
`max_field_chars`, so memory stays bounded whatever the input (`/dev/zero`, one 1 GB line).
`utf-8-sig` semantics (a BOM is dropped); the csv module handles quoted fields, embedded commas,
quotes and newlines, and CRLF line ends. Standard library only.

Errors name what a person has to fix, and never quote the file's content (the source may be a
file nobody meant to share; errors end up in task logs):

- the source cannot be read: `SourceUnreadableError`;
- the file is empty (no header line): `EmptySourceError`;
- the header lacks a required column or repeats one: `HeaderError` (names the schema's columns and
  how many columns the file has, never the header's text);
- the bytes are not CSV/UTF-8 we can trust past that point: `MalformedCsvError` (with the line);
- a limit is exceeded: `CsvLimitError` (which limit, its value, the line);
- bad rows (a required value missing, a value of the wrong type, too many fields) are counted and
  reported with their row and line numbers and the column (the value itself is not repeated);
  `on_bad_rows="skip"` leaves them out, `"fail"` raises `BadRowsError` once the whole file was
  read, so the error holds the full count.

Row numbers count data rows from 1 (the header is not a row); line numbers are physical lines of
the file, where the record starts (a quoted field may span several lines).
"""

from __future__ import annotations

import contextlib
import csv
import os
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from kafka_workflows.errors import KafkaWorkflowsError
from kafka_workflows.sources.csv_lines import BoundedLines, LimitExceeded, Limits, NotUtf8
from kafka_workflows.sources.csv_schema import TYPES, Column, Schema, norm

__all__ = ["BAD_ROW_MODES", "TYPES", "BadRow", "BadRowReport", "BadRowsError", "Column", "CsvJobSource",
           "CsvLimitError", "CsvSourceError", "EmptySourceError", "HeaderError", "Job", "Limits",
           "MalformedCsvError", "Row", "Schema", "SourceUnreadableError", "describe_source", "open_local"]

BAD_ROW_MODES = ("skip", "fail")
OnBadRows = Literal["skip", "fail"]
Source = str | os.PathLike[str] | IO[bytes]


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


class CsvLimitError(CsvSourceError):
    """A line, record, column count or field is larger than the configured limit."""


class BadRowsError(CsvSourceError):
    """Rows failed validation and `on_bad_rows` is "fail"."""

    def __init__(self, message: str, report: BadRowReport) -> None:
        super().__init__(message)
        self.report = report


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
    if parts.scheme and len(parts.scheme) > 1:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))
    return text


def open_local(source: Source) -> IO[bytes]:
    """A stream as is, or a local path opened for reading; URLs are the caller's (the Airflow side's) job."""
    if not isinstance(source, str | os.PathLike):
        return source
    name = describe_source(source)
    path = os.fspath(source).strip()
    if not path:
        raise SourceUnreadableError("the CSV source is empty: give a path or an open stream")
    scheme = urllib.parse.urlsplit(path).scheme
    if scheme and len(scheme) > 1:  # one letter is a Windows drive
        raise SourceUnreadableError(f"{name}: the core reads local paths and streams only; open {scheme}:// "
                                    "sources through the Airflow side (kafka_workflows_airflow.sources)")
    try:
        return open(path, "rb")
    except FileNotFoundError as exc:
        raise SourceUnreadableError(f"{name}: no such file") from exc
    except IsADirectoryError as exc:
        raise SourceUnreadableError(f"{name}: is a directory, not a CSV file") from exc
    except OSError as exc:
        raise SourceUnreadableError(f"{name}: cannot open it ({exc.strerror or type(exc).__name__})") from exc


# -- the reader ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    row: int
    line: int
    values: dict[str, Any]


class CsvJobSource:
    """Read `source` once, as a stream: `open()` checks the header, then `jobs()` (or `rows()`) yields.

        with CsvJobSource(stream, schema, rows_per_job=500, name="s3://imports/a.csv") as csv_jobs:
            for job in csv_jobs.jobs():
                ...
        csv_jobs.rows_read, csv_jobs.valid_rows, csv_jobs.bad.describe()

    Counters are final once the iterator is exhausted.
    """

    def __init__(self, source: Source, schema: Schema | Mapping[str, Any] | Sequence[Mapping[str, Any]], *,
                 rows_per_job: int = 500, on_bad_rows: OnBadRows = "skip", max_examples: int = 10,
                 delimiter: str = ",", limits: Limits | None = None, name: str | None = None) -> None:
        if isinstance(rows_per_job, bool) or not isinstance(rows_per_job, int) or rows_per_job < 1:
            raise ValueError(f"rows_per_job must be an integer >= 1, got {rows_per_job!r}")
        if on_bad_rows not in BAD_ROW_MODES:
            raise ValueError(f"on_bad_rows must be one of {', '.join(BAD_ROW_MODES)}, got {on_bad_rows!r}")
        self.source = source
        self.name = name or describe_source(source)
        self.schema = Schema.parse(schema)
        self.rows_per_job = rows_per_job
        self.on_bad_rows = on_bad_rows
        self.max_examples = max_examples
        self.delimiter = delimiter
        self.limits = limits or Limits()
        self.rows_read = 0
        self.valid_rows = 0
        self.jobs_yielded = 0
        self.bad = BadRowReport()
        self.header: list[str] = []
        self._raw: IO[bytes] | None = None
        self._lines: BoundedLines | None = None
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
        self._raw = open_local(self.source)
        try:
            self._lines = BoundedLines(self._raw, self.limits)
            self._reader = csv.reader(self._lines, delimiter=self.delimiter, strict=True)
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
        if self._raw is not None:
            with contextlib.suppress(OSError, ValueError):
                self._raw.close()
        self._raw = None

    @property
    def positions(self) -> list[tuple[Column, int]]:
        """Each schema column with its index in the file (-1: an optional column the file lacks)."""
        return list(self._positions)

    def _check_header(self, header: list[str]) -> None:
        self.header = [cell.strip() for cell in header]
        self._width = len(header)
        where: dict[str, list[int]] = {}
        for i, cell in enumerate(self.header):
            if cell:
                where.setdefault(norm(cell), []).append(i)
        problems = []
        positions = []
        for column in self.schema.columns:
            found = where.get(norm(column.name), [])
            if len(found) > 1:
                problems.append(f"column {column.name!r} appears {len(found)} times "
                                f"(columns {', '.join(str(i + 1) for i in found)})")
            elif found:
                positions.append((column, found[0]))
            elif column.required:
                problems.append(f"required column {column.name!r} is missing")
            else:
                positions.append((column, -1))
        if problems:  # the header's own text is content: only its size is said
            raise HeaderError(f"{self.name}, header (line {self._last_line}): {'; '.join(problems)}; "
                              f"the header has {len(self.header)} column(s), the schema expects "
                              f"{', '.join(c.name for c in self.schema.columns)}")
        self._positions = positions

    def _next_record(self) -> list[str] | None:
        assert self._reader is not None and self._lines is not None
        self._lines.start_record()
        try:
            record: list[str] = next(self._reader)
        except StopIteration:
            return None
        except LimitExceeded as exc:
            setting = "max_line_bytes" if exc.what == "line" else "max_record_bytes"
            raise CsvLimitError(f"{self.name}: the {exc.what} at line {exc.line} is longer than {exc.limit} bytes "
                                f"(limit {setting}); is this a CSV file?") from None
        except NotUtf8 as exc:
            raise MalformedCsvError(f"{self.name}: line {exc.line} is not UTF-8 text; save the file as UTF-8") \
                from None
        except csv.Error as exc:  # the csv module's messages name the problem, not the text
            if "field larger than field limit" in str(exc):
                raise CsvLimitError(f"{self.name}: a field of the record starting at line {self._last_line + 1} "
                                    f"is longer than {csv.field_size_limit()} characters "
                                    "(limit max_field_chars)") from None
            raise MalformedCsvError(f"{self.name}: malformed CSV at line {self._reader.line_num} ({exc}); "
                                    "check the quotes of the record starting at "
                                    f"line {self._last_line + 1}") from None
        except OSError as exc:
            raise SourceUnreadableError(f"{self.name}: reading failed near line {self._last_line + 1} "
                                        f"({exc.strerror or type(exc).__name__})") from exc
        self._start_line = self._last_line + 1
        self._last_line = self._reader.line_num
        if len(record) > self.limits.max_columns:
            raise CsvLimitError(f"{self.name}: the record at line {self._start_line} has {len(record)} fields, "
                                f"more than {self.limits.max_columns} (limit max_columns)")
        longest = max(map(len, record), default=0)
        if longest > self.limits.max_field_chars:
            raise CsvLimitError(f"{self.name}: a field of the record at line {self._start_line} is {longest} "
                                f"characters long, more than {self.limits.max_field_chars} "
                                "(limit max_field_chars)")
        return record

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
            except ValueError as exc:  # the value is content: say what is wrong with it, not what it is
                return self._bad(BadRow(row_number, line, f"the value {exc}", column.name))
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
