"""csv_source: real-world CSV (quotes, embedded newlines, BOM, CRLF), schema checks, bad rows, streaming,
bounded memory for hostile input, and errors that never quote the file's content."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kafka_workflows.sources.csv_source import (
    BadRowsError,
    Column,
    CsvJobSource,
    CsvLimitError,
    EmptySourceError,
    HeaderError,
    Limits,
    MalformedCsvError,
    Schema,
    SourceUnreadableError,
    describe_source,
)
from kw_examples import contacts

SCHEMA = Schema.of(Column("email", "email", required=True), Column("name", "string", required=True),
                   Column("age", "int"), Column("notes"))


def _read(data: bytes | str, schema: Schema = SCHEMA, **options: Any) -> tuple[list[dict[str, Any]], CsvJobSource]:
    raw = data.encode() if isinstance(data, str) else data
    source = CsvJobSource(io.BytesIO(raw), schema, **options)
    with source:
        rows = [r.values for r in source.rows()]
    return rows, source


REAL_WORLD = [
    ["email", "name", "age", "notes"],
    ["ana@example.com", "Núñez, Ana", "31", 'said "call me", twice'],
    ["bo@example.com", "Bo", "", "line one\nline two, with comma"],
    ["cy@example.com", "Cy", "7", "crlf\r\ninside"],
]


@pytest.mark.parametrize("bom", [True, False])
@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_quoted_fields_embedded_newlines_bom_and_crlf_all_read_the_same(bom: bool, newline: str) -> None:
    out = io.StringIO()
    import csv

    csv.writer(out, lineterminator=newline).writerows(REAL_WORLD)
    text = ("\ufeff" if bom else "") + out.getvalue()
    rows, source = _read(text)
    assert rows == [
        {"email": "ana@example.com", "name": "Núñez, Ana", "age": 31, "notes": 'said "call me", twice'},
        {"email": "bo@example.com", "name": "Bo", "age": None, "notes": "line one\nline two, with comma"},
        {"email": "cy@example.com", "name": "Cy", "age": 7, "notes": "crlf\r\ninside"},
    ]
    assert source.header == ["email", "name", "age", "notes"], "the BOM is not part of the first column name"
    assert (source.rows_read, source.valid_rows, source.bad.count) == (3, 3, 0)


def test_header_matches_case_insensitively_ignores_spaces_and_unknown_columns() -> None:
    rows, _ = _read(" Email ,Extra,NAME\r\nA@Example.COM,x,Al\r\n")
    assert rows == [{"email": "a@example.com", "name": "Al", "age": None, "notes": None}]


def test_missing_required_column_names_the_file_and_the_column(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("email,age\nx@y.io,3\n")
    with pytest.raises(HeaderError, match=r"people\.csv, header \(line 1\): required column 'name' is missing"):
        CsvJobSource(path, SCHEMA).open()


def test_a_repeated_column_is_a_header_error() -> None:
    with pytest.raises(HeaderError, match=r"column 'email' appears 2 times \(columns 1, 3\)"):
        _read("email,name,EMAIL\na@b.co,A,c@d.co\n")


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\r\n\r\n", b" , \n"])
def test_an_empty_file_says_so(data: bytes) -> None:
    with pytest.raises(EmptySourceError, match=r"<stream> is empty: expected a header line naming the columns"):
        _read(data)


def test_a_header_without_rows_yields_no_job() -> None:
    source = CsvJobSource(io.BytesIO(b"email,name\r\n"), SCHEMA)
    with source:
        assert list(source.jobs()) == []
    assert source.summary()["rows"] == 0


BAD = (
    "email,name,age\n"
    "ok1@x.io,One,1\n"          # row 1
    "not-an-email,Two,2\n"      # row 2, bad email
    '"multi\nline@x.io",Three,3\n'  # row 3 (lines 4-5), email with a newline: bad
    "ok4@x.io,,4\n"             # row 4 (line 6), name missing
    "ok5@x.io,Five,five\n"      # row 5 (line 7), age not an int
    "ok6@x.io,Six,6,extra\n"    # row 6 (line 8), too many fields
    "ok7@x.io,Seven,7\n"        # row 7
)


def test_bad_rows_are_skipped_and_reported_with_row_line_column_and_reason() -> None:
    rows, source = _read(BAD, max_examples=3)
    assert [r["email"] for r in rows] == ["ok1@x.io", "ok7@x.io"]
    summary = source.summary()
    assert (summary["rows"], summary["valid_rows"], summary["bad_rows"]) == (7, 2, 5)
    assert summary["bad_examples"] == [
        {"row": 2, "line": 3, "column": "email", "reason": "the value is not a valid email address"},
        {"row": 3, "line": 4, "column": "email", "reason": "the value is not a valid email address"},
        {"row": 4, "line": 6, "column": "name", "reason": "required value is missing"},
    ]
    assert source.bad.describe().endswith("(and 2 more)")
    all_examples = _read(BAD)[1].bad.examples
    assert [str(b) for b in all_examples[3:]] == [
        "row 5 (line 7), column 'age': the value is not an integer",
        "row 6 (line 8): has 4 fields but the header has 3 (an unquoted delimiter?)"]


def test_bad_rows_fail_after_the_whole_file_with_the_full_count() -> None:
    source = CsvJobSource(io.BytesIO(BAD.encode()), SCHEMA, on_bad_rows="fail", rows_per_job=1)
    seen = []
    with pytest.raises(BadRowsError, match=r"<stream>: 5 bad row\(s\): row 2 \(line 3\), column 'email'") as info:
        for job in source.jobs():
            seen.append(job.index)
    assert info.value.report.count == 5 and source.rows_read == 7
    assert "nothing was imported (on_bad_rows=fail" in str(info.value)


@pytest.mark.parametrize(("column", "raw", "expected"), [
    (Column("n", "int"), "-12", -12), (Column("n", "float"), "2.5", 2.5), (Column("n", "bool"), "Yes", True),
    (Column("n", "bool"), "0", False), (Column("n", "date"), "2026-11-27", "2026-11-27"),
    (Column("n", "email"), "Bob.Smith+x@Mail.Example.org", "bob.smith+x@mail.example.org"),
])
def test_types_parse(column: Column, raw: str, expected: Any) -> None:
    assert column.parse(raw) == expected


@pytest.mark.parametrize(("column", "raw", "reason"), [
    (Column("n", "int"), "1.5", "is not an integer"), (Column("n", "float"), "nan", "is not a finite number"),
    (Column("n", "bool"), "maybe", "is not a boolean"), (Column("n", "date"), "27/11/2026", "is not a date"),
    (Column("n", "email"), "a@b", "is not a valid email"), (Column("n", "email"), "a b@c.de", "is not a valid"),
    (Column("n", max_length=3), "abcd", "is 4 characters long, more than 3"),
])
def test_types_reject(column: Column, raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        column.parse(raw)


def test_schema_from_a_mapping_and_its_errors() -> None:
    schema = Schema.parse({"email": {"type": "email", "required": True}, "age": "int"})
    assert schema.columns == (Column("email", "email", True), Column("age", "int"))
    with pytest.raises(ValueError, match="type 'uuid' is not one of"):
        Schema.parse({"id": "uuid"})
    with pytest.raises(ValueError, match="declares column 'A' twice"):
        Schema.of(Column("a"), Column("A"))


def test_rows_are_grouped_into_numbered_jobs() -> None:
    data = "email,name\n" + "".join(f"u{i}@x.io,U{i}\n" for i in range(1, 8)) + "bad,B\n"
    source = CsvJobSource(io.BytesIO(data.encode()), SCHEMA, rows_per_job=3)
    with source:
        jobs = list(source.jobs())
    assert [(j.index, len(j.rows), j.row_numbers) for j in jobs] == [(0, 3, [1, 2, 3]), (1, 3, [4, 5, 6]),
                                                                      (2, 1, [7])]
    assert jobs[0].to_message() == {"rows": jobs[0].rows, "row_numbers": [1, 2, 3]}
    assert source.summary()["jobs"] == 3 and source.summary()["bad_rows"] == 1


def test_an_unterminated_quote_is_malformed_and_names_the_line() -> None:
    with pytest.raises(MalformedCsvError, match=r"malformed CSV at line \d+ .*record starting at line 3"):
        _read('email,name\na@b.io,A\nc@d.io,"never closed\nmore\n')


def test_latin1_bytes_are_not_utf8() -> None:
    with pytest.raises(MalformedCsvError, match=r"line 2 is not UTF-8 text; save the file as UTF-8") as info:
        _read("email,name\na@b.io,José\n".encode("latin-1"))
    assert "0xe9" not in str(info.value), "not even one byte of the content is shown"


def test_invalid_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="rows_per_job must be an integer >= 1"):
        CsvJobSource(io.BytesIO(b""), SCHEMA, rows_per_job=0)
    with pytest.raises(ValueError, match="on_bad_rows must be one of skip, fail"):
        CsvJobSource(io.BytesIO(b""), SCHEMA, on_bad_rows="ignore")  # type: ignore[arg-type]


# -- sources -------------------------------------------------------------------------------
def test_unreadable_local_sources(tmp_path: Path) -> None:
    with pytest.raises(SourceUnreadableError, match=r"nope\.csv: no such file"):
        CsvJobSource(tmp_path / "nope.csv", SCHEMA).open()
    with pytest.raises(SourceUnreadableError, match="is a directory"):
        CsvJobSource(tmp_path, SCHEMA).open()
    with pytest.raises(SourceUnreadableError, match="the CSV source is empty"):
        CsvJobSource("  ", SCHEMA).open()


@pytest.mark.parametrize("url", ["s3://bucket/x.csv", "http://127.0.0.1:9/x.csv", "file:///etc/passwd"])
def test_the_core_opens_no_url_it_leaves_them_to_the_airflow_side(url: str) -> None:
    with pytest.raises(SourceUnreadableError, match="the core reads local paths and streams only"):
        CsvJobSource(url, SCHEMA).open()


def test_a_stream_is_named_as_the_caller_says() -> None:
    with pytest.raises(HeaderError, match=r"^s3://imports/a\.csv, header"):
        CsvJobSource(io.BytesIO(b"x\n"), SCHEMA, name="s3://imports/a.csv").open()


def test_describe_source_hides_credentials_and_query() -> None:
    assert describe_source("https://user:pw@host.example:8443/a/b.csv?sig=abc") == "https://host.example:8443/a/b.csv?…"
    assert describe_source("s3://aws_default@imports/a.csv") == "s3://imports/a.csv"
    assert describe_source("/data/contacts.csv") == "/data/contacts.csv"


# -- errors never quote the content --------------------------------------------------------
SECRET = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXNpZ25pbmcta2V5"


@pytest.mark.parametrize("data", [
    f"{SECRET}\n",                               # a secret file: one line, no schema column
    f"email,{SECRET},{SECRET}x\n",                # a header with some columns, not all
    f"email,name\n{SECRET},x\n",                 # a bad value: reported, not quoted
    f"email,name\n\"{SECRET}\n",                   # an unterminated quote
    f"email,name\na@b.io,{SECRET}\xff\n",          # not UTF-8 (as bytes below)
])
def test_no_error_or_report_quotes_the_content(data: str) -> None:
    raw = data.encode("utf-8", "surrogateescape").replace("\xff".encode(), b"\xff")
    source = CsvJobSource(io.BytesIO(raw), SCHEMA, on_bad_rows="fail")
    with pytest.raises(Exception) as info, source:
        list(source.jobs())
    text = f"{info.value} {source.summary()} {info.value.__cause__} {info.value.__context__}"
    assert SECRET[:12] not in text and "c2VjcmV0" not in text, text


def test_a_header_error_lists_the_missing_columns_and_counts_the_found_ones() -> None:
    with pytest.raises(HeaderError) as info:
        _read(f"{SECRET},age,{SECRET}2\n")
    assert str(info.value) == ("<stream>, header (line 1): required column 'email' is missing; required column "
                               "'name' is missing; the header has 3 column(s), the schema expects email, name, "
                               "age, notes")


# -- bounded memory whatever the input -----------------------------------------------------
class Endless(io.RawIOBase):
    """`size` bytes made of `pattern`, produced on demand (never held), counting what was read."""

    def __init__(self, size: int, pattern: bytes = b"a", head: bytes = b"") -> None:
        self.size, self.head, self.handed_out = size, head, 0
        self.block = pattern * max(1, 65536 // len(pattern))  # whole patterns: a block boundary cuts none

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.handed_out >= self.size:
            return 0
        if self.handed_out < len(self.head):
            data = self.head[self.handed_out:]
        else:
            offset = (self.handed_out - len(self.head)) % len(self.block)
            data = self.block[offset:]
        n = min(len(buffer), len(data), self.size - self.handed_out)
        buffer[:n] = data[:n]
        self.handed_out += n
        return n


def _peak_while(read: Any) -> tuple[int, BaseException]:
    tracemalloc.start()
    try:
        with pytest.raises(CsvLimitError) as info:
            read()
        return tracemalloc.get_traced_memory()[1], info.value
    finally:
        tracemalloc.stop()


MB = 1024 * 1024


def test_dev_zero_is_refused_as_a_too_long_line_with_bounded_memory() -> None:
    with open("/dev/zero", "rb") as zero:
        peak, error = _peak_while(lambda: _read_stream(zero))
    assert "line at line 1 is longer than 1048576 bytes (limit max_line_bytes)" in str(error)
    assert peak < 100 * MB, f"peak {peak / MB:.1f} MB"


def test_a_1gb_single_line_is_refused_after_reading_about_the_limit() -> None:
    stream = Endless(1024 * MB, b"a", head=b"email,name\n")
    peak, error = _peak_while(lambda: _read_stream(io.BufferedReader(stream)))
    assert "the line at line 2 is longer than 1048576 bytes (limit max_line_bytes)" in str(error)
    assert peak < 100 * MB and stream.handed_out < 4 * MB, (peak, stream.handed_out)


def test_10_million_columns_are_refused_with_bounded_memory() -> None:
    stream = Endless(10_000_000, b",")
    peak, error = _peak_while(lambda: _read_stream(io.BufferedReader(stream)))
    assert "limit max_line_bytes" in str(error) and peak < 100 * MB, (peak, error)
    # Within the line limit, the column limit speaks.
    wide = io.BytesIO(b"email,name" + b"," * 200_000 + b"\n")
    peak, error = _peak_while(lambda: _read_stream(wide, limits=Limits(max_columns=1000)))
    assert "the record at line 1 has 200002 fields, more than 1000 (limit max_columns)" in str(error)
    assert peak < 100 * MB


def test_a_quoted_field_spanning_many_lines_is_bounded_by_the_field_limit() -> None:
    stream = Endless(1024 * MB, b"x\n", head=b'email,name\n"')
    peak, error = _peak_while(lambda: _read_stream(io.BufferedReader(stream)))
    assert "longer than 131072 characters (limit max_field_chars)" in str(error)
    assert peak < 100 * MB and stream.handed_out < 8 * MB


def test_a_record_of_many_multi_line_fields_is_bounded_by_the_record_limit() -> None:
    stream = Endless(1024 * MB, b'"' + b"y" * 1000 + b'\n",', head=b"email,name\n")
    peak, error = _peak_while(lambda: _read_stream(io.BufferedReader(stream)))
    assert "the record at line " in str(error) and "longer than 4194304 bytes (limit max_record_bytes)" in str(error)
    assert peak < 100 * MB and stream.handed_out < 8 * MB


def test_a_field_longer_than_max_field_chars_is_an_error_naming_the_limit() -> None:
    with pytest.raises(CsvLimitError, match=r"a field of the record at line 2 is 5000 characters long, more than "
                                            r"4096 \(limit max_field_chars\)"):
        _read("email,name\na@b.io," + "n" * 5000 + "\n", limits=Limits(max_field_chars=4096))


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_columns must be an integer >= 1"):
        Limits(max_columns=0)
    with pytest.raises(ValueError, match="above the csv module's field size limit"):
        Limits(max_field_chars=10**9)


def test_lone_cr_line_ends_still_read() -> None:
    rows, _ = _read(b"email,name\ra@b.io,A\rc@d.io,C\r")
    assert [r["email"] for r in rows] == ["a@b.io", "c@d.io"]


def _read_stream(stream: Any, limits: Limits | None = None) -> None:
    source = CsvJobSource(stream, SCHEMA, limits=limits)
    with source:
        for _ in source.jobs():
            pass


# -- streaming -----------------------------------------------------------------------------
class GeneratedCsv(io.RawIOBase):
    """A CSV of `rows` rows made on demand: it never exists whole, and it counts the bytes handed out."""

    def __init__(self, rows: int) -> None:
        self.lines = self._lines(rows)
        self.pending = b""
        self.handed_out = 0

    @staticmethod
    def _lines(rows: int) -> Iterator[bytes]:
        yield b"\xef\xbb\xbfemail,name,age,notes\r\n"
        for n in range(rows):
            yield f'user{n}@example.com,"Name {n}, Jr.",{n % 90},"note\r\nline {n}"\r\n'.encode()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while len(self.pending) < len(buffer):
            chunk = next(self.lines, None)
            if chunk is None:
                break
            self.pending += chunk
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        self.handed_out += n
        return n


def test_the_source_is_streamed_not_loaded() -> None:
    stream = GeneratedCsv(200_000)  # ~11 MB if it were materialised
    source = CsvJobSource(io.BufferedReader(stream), SCHEMA, rows_per_job=100)
    with source:
        jobs = source.jobs()
        first = next(jobs)
        assert first.rows[0] == {"email": "user0@example.com", "name": "Name 0, Jr.", "age": 0,
                                 "notes": "note\r\nline 0"}
        assert stream.handed_out <= 128 * 1024, "only a few buffers were read to make the first job"
        total = 1 + sum(1 for _ in jobs)
    assert total == 2000 and source.valid_rows == 200_000


def test_memory_stays_bounded_while_reading_a_large_file() -> None:
    rows = 100_000
    stream = GeneratedCsv(rows)
    tracemalloc.start()
    try:
        source = CsvJobSource(io.BufferedReader(stream), SCHEMA, rows_per_job=500)
        with source:
            count = sum(len(job.rows) for job in source.jobs())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == rows
    assert stream.handed_out > 6_000_000
    assert peak < stream.handed_out / 4, f"peak {peak} bytes for a {stream.handed_out}-byte CSV"


def test_the_contacts_generator_and_schema_agree(tmp_path: Path) -> None:
    generated = contacts.write_csv(tmp_path / "contacts.csv", 1000)
    assert generated.path.read_bytes().startswith(b"\xef\xbb\xbf") and b"\r\n" in generated.path.read_bytes()
    source = CsvJobSource(generated.path, contacts.SCHEMA, rows_per_job=64, max_examples=1000)
    with source:
        imported = {row["email"]: row for job in source.jobs() for row in job.rows}
    assert imported == generated.valid
    assert [b.row for b in source.bad.examples] == generated.bad_rows and generated.bad > 10


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64])
def test_lines_split_the_same_whatever_the_chunk_boundaries(chunk: int) -> None:
    from kafka_workflows.sources.csv_lines import BoundedLines

    data = b"\xef\xbb\xbfa,b\r\nc\rd\n\r\ne\xc3\xa9\r\n\r"
    lines = list(BoundedLines(io.BytesIO(data), Limits(), chunk=chunk))
    assert lines == ["a,b\r\n", "c\r", "d\n", "\r\n", "eé\r\n", "\r"]
