"""The plugin's scripts build the DOM with its API only: no HTML is parsed from a string anywhere, so no
value can become markup (the browser tests show a forged record staying text; this keeps it so)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "plugins" / "kafka_workflows_airflow" / "api" / "static"
HTML_SINKS = re.compile(r"\.(innerHTML|outerHTML)\s*[+]?=|insertAdjacentHTML|document\.write|\beval\s*\(|"
                        r"new\s+Function\s*\(|createContextualFragment|DOMParser|setAttribute\(\s*[\"']on")


@pytest.mark.parametrize("script", sorted(p.name for p in STATIC.glob("*.js")))
def test_no_script_of_the_plugin_parses_html_from_a_string(script: str) -> None:
    code = "\n".join(line for line in (STATIC / script).read_text().splitlines()
                     if not line.lstrip().startswith("//"))
    assert not HTML_SINKS.findall(code), f"{script} turns a string into markup or code"
