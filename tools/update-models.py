#!/usr/bin/env python3
"""Regenerate crates/berth-wire/models/*.json from an installed botocore.

Berth validates and binds every request from the same service models that boto3 uses, so the
server and the official clients can never disagree about a member's location, type or
constraints. The models are Apache-2.0 (botocore); documentation strings are stripped to keep
the files small. Usage: python3 tools/update-models.py  (needs `pip install botocore`).
"""
import gzip
import json
import os
import pathlib

import botocore

DATA = pathlib.Path(botocore.__file__).parent / "data"
OUT = pathlib.Path(__file__).resolve().parent.parent / "crates" / "berth-wire" / "models"
SERVICES = {"bedrock-agentcore-control": "2023-06-05", "bedrock-agentcore": "2024-02-28"}


def strip(node):
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k not in ("documentation", "documentationUrl")}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def load(path):
    gz = path.with_name(path.name + ".gz")
    if gz.exists():
        return json.load(gzip.open(gz))
    return json.load(open(path))


for service, version in SERVICES.items():
    model = strip(load(DATA / service / version / "service-2.json"))
    model["metadata"]["botocoreVersion"] = botocore.__version__
    target = OUT / f"{service}.json"
    target.write_text(json.dumps(model, indent=1, sort_keys=True) + "\n")
    print(f"wrote {target.relative_to(OUT.parent.parent.parent)} ({os.path.getsize(target)} bytes)")
