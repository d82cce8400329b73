"""`kafka-workflows validate` and `schema`: specs only, no broker."""

from __future__ import annotations

import argparse
import json
import sys

from kafka_workflows.spec import SpecError, json_schema, load_specs


def validate(args: argparse.Namespace) -> int:
    bad = 0
    for path, result in load_specs(args.specs):
        if isinstance(result, SpecError):
            bad += 1
            print(result, file=sys.stderr)
        else:
            print(f"{path}: ok ({result.name}: {len(result.steps)} steps, {len(result.workers)} workers, "
                  f"{len(result.processors)} processors, {len(result.stores)} stores)")
    return 1 if bad else 0


def schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0
