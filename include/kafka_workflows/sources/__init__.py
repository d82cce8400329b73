"""Reading a request's source into jobs (pattern 6's input), with bounded memory and errors that
never quote the source's content.

csv_lines.py   splitting a byte stream into CSV records under line, record and field limits
csv_schema.py  the columns a CSV must have and how each value is parsed
csv_source.py  CsvJobSource: rows to jobs, bad rows reported by number
"""
