"""`kafka-workflows validate` and `schema`: specs only, no broker."""

from __future__ import annotations

import argparse
import json
import sys

from kafka_workflows.spec import SpecError, json_schema, load_specs


def validate(args: argparse.Namespace) -> int:
    """Every spec; with --registry, also every declared schema against the registry's compatibility rule."""
    bad = 0
    registry = getattr(args, "registry", None)
    client = None
    for path, result in load_specs(args.specs):
        if isinstance(result, SpecError):
            bad += 1
            print(result, file=sys.stderr)
            continue
        print(f"{path}: ok ({result.name}: {len(result.steps)} steps, {len(result.workers)} workers, "
              f"{len(result.processors)} processors, {len(result.stores)} stores)")
        if registry and result.topics:
            from kafka_workflows.schemas.check import check_spec
            from kafka_workflows.schemas.registry import RegistrySettings, client_for, settings_from_env

            if client is None:
                env = settings_from_env()  # the connection's auth, when the URL is the same registry's
                client = client_for(RegistrySettings(registry.rstrip("/"), env.client if env else {}))
            for finding in check_spec(result, client):
                print(finding.render(str(path)), file=sys.stdout if finding.ok else sys.stderr)
                bad += not finding.ok
    return 1 if bad else 0


def schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0
