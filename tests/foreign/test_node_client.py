"""The protos are usable outside Python: a Node.js client built from them alone with
@grpc/grpc-js drives a hub on loopback and reads its error details.

The npm packages are installed by the test itself, from the committed package-lock.json,
into a cache under .venv (or the system's temporary directory) keyed by the lock's hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from google.rpc import error_details_pb2
from sqlalchemy import Engine

from coalition.api.server import Hub
from tests.conftest import api_key

pytestmark = pytest.mark.end_to_end

ROOT = Path(__file__).resolve().parents[2]
NODE_PROJECT = Path(__file__).parent / "node"
NPM_INSTALL_SECONDS_MAX = 300
NODE_RUN_SECONDS_MAX = 60


def node_modules() -> Path:
    """node_modules for NODE_PROJECT's lock file, installed once per lock (`npm ci`)."""
    lock = (NODE_PROJECT / "package-lock.json").read_bytes()
    version = hashlib.sha256(lock).hexdigest()[:16]
    cache = ROOT / ".venv" if (ROOT / ".venv").is_dir() else Path(tempfile.gettempdir())
    installed = cache / "node-cache" / version
    if (installed / "node_modules").is_dir():
        return installed / "node_modules"
    npm = shutil.which("npm")
    assert npm is not None, "node is installed but npm is not: install npm (it ships with node)"
    installed.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{version}.", dir=installed.parent))
    for name in ("package.json", "package-lock.json"):
        shutil.copy(NODE_PROJECT / name, partial / name)
    # --ignore-scripts: the packages are pure JavaScript; nothing needs to build or download.
    subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=partial,
        check=True,
        timeout=NPM_INSTALL_SECONDS_MAX,
    )
    try:
        partial.rename(installed)  # atomic: a concurrent run sees all of it or nothing
    except OSError:  # another run installed it first
        shutil.rmtree(partial)
    return installed / "node_modules"


def googleapis_proto_dir() -> Path:
    """Where googleapis-common-protos keeps google/rpc/*.proto (status, error details)."""
    return Path(error_details_pb2.__file__).resolve().parents[2]


def run_node_client(hub: Hub, engine: Engine) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the foreign-client test needs Node.js (and npm)")
    modules = node_modules()
    ((_, authorization),) = api_key(engine, "test-coffee")
    settings = {
        "target": f"127.0.0.1:{hub.port}",
        "api_key": authorization.removeprefix("Bearer "),
        "proto_dir": str(ROOT / "protos"),
        "googleapis_dir": str(googleapis_proto_dir()),
        "customer_id": "node-C-1",
        "currency": "CNY",
    }
    completed = subprocess.run(
        [node, str(NODE_PROJECT / "call_hub.js"), json.dumps(settings)],
        env={**os.environ, "NODE_PATH": str(modules)},
        capture_output=True,
        text=True,
        timeout=NODE_RUN_SECONDS_MAX,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def test_a_node_grpc_js_client_drives_the_hub_from_the_protos(hub: Hub, engine: Engine) -> None:
    seen = run_node_client(hub, engine)
    assert seen["created"] is True and seen["member_id"].startswith("mem_")
    # int64 travels as decimal strings in JavaScript (longs: String): 100.00 CNY at 0.2.
    assert (seen["earned_points"], seen["balance_points"]) == ("20", "20")
    assert seen["earned_replayed"] is True
    assert seen["replayed_transaction_id"] == seen["transaction_id"]
    assert seen["quote_sufficient"] is True
    assert seen["overdraft"] == {
        "code": "FAILED_PRECONDITION",
        "message": seen["overdraft"]["message"],
        "reason": "INSUFFICIENT_POINTS",
        "domain": "coalition",
        "metadata": {
            "member_id": seen["member_id"],
            "balance_points": "20",
            "points_requested": "1000000",
        },
        "fields": [],
    }
    bad_input = seen["bad_input"]
    assert (bad_input["code"], bad_input["reason"]) == ("INVALID_ARGUMENT", "INVALID_FIELD")
    assert bad_input["fields"] == [{"field": "points", "reason": "INVALID_FIELD"}]
    assert (seen["unknown"]["code"], seen["unknown"]["reason"]) == ("NOT_FOUND", "MEMBER_NOT_FOUND")
    assert seen["unknown"]["metadata"] == {"member_id": "mem_none"}
