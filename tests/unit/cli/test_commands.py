"""The CLI's command table: every command parses its arguments and names a function that exists."""

from __future__ import annotations

import importlib

import pytest

from kafka_workflows.cli import main, parser
from kafka_workflows.cli.commands import COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_command_runs_a_function_that_exists(command) -> None:
    module, _, function = command.runs.partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_the_table_is_what_the_parser_offers() -> None:
    sub = next(a for a in parser()._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(c.name for c in COMMANDS)


def test_a_usage_error_names_the_problem_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--topic", "t"]) == 2
    assert "worker needs a specs folder, or --group, --handler" in capsys.readouterr().err
