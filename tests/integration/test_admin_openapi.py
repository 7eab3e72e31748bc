"""The admin API's OpenAPI document against the running API: schemathesis generates requests
from the document (valid and invalid ones) and checks every answer of a real broker process
against it: status codes and content types documented, bodies conforming to their schemas,
bad input refused with a 4xx, calls without a token refused, never a 500."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from admin_client import get
from broker_process import BrokerProcess, free_port
from clients import PahoClient

from hbroker.admin.tokens import hash_token

ADMIN_TOKEN = "admin-token-for-the-openapi-test"
READ_TOKEN = "read-token-for-the-openapi-test"


@pytest.fixture(scope="module")
def api_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess, str]]:
    """A broker with a client, a subscription, a shared group and a retained message, so that
    the lists the API answers are not all empty."""
    workdir = tmp_path_factory.mktemp("openapi")
    port = free_port()
    broker = BrokerProcess(workdir, {
        "storage": {"backend": "sqlite", "path": "data/hbroker.db"},
        "admin": {"enabled": True, "port": port, "tokens": [
            {"name": "operator", "hash": hash_token(ADMIN_TOKEN), "role": "admin"},
            {"name": "viewer", "hash": hash_token(READ_TOKEN)}]}},
        listeners=[{"type": "tcp", "name": "main"}])
    client = PahoClient(broker.host, broker.port, "openapi-client", version=5)
    try:
        client.subscribe("openapi/#", qos=1)
        client.subscribe("$share/workers/jobs/#", qos=0)
        client.publish("openapi/state", b"on", qos=1, retain=True)
        client.expect()
        yield broker, f"http://127.0.0.1:{port}"
    finally:
        client.disconnect()
        assert broker.stop() == 0, broker.log()


def test_api_answers_conform_to_its_openapi_document(
        api_broker: tuple[BrokerProcess, str], tmp_path: Path) -> None:
    """schemathesis's every phase (examples, coverage, fuzzing, and stateful sequences that
    follow the document's links from a list to its items) and every check."""
    broker, base = api_broker
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{base}/api/v1/openapi.json",
         "--header", f"Authorization: Bearer {ADMIN_TOKEN}", "--checks", "all",
         "--max-examples", "20", "--workers", "1", "--seed", "18",
         "--suppress-health-check", "all", "--output-truncate", "false"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_COLOR": "1"})
    assert run.returncode == 0, f"{run.stdout[-20000:]}\n{run.stderr[-5000:]}"
    assert broker.proc.poll() is None, broker.log()
    # The calls reached the API's own code: the audit log has the mutating ones.
    broker.wait_log(r"hbroker\.audit: admin call token=operator method=POST "
                    r"path=/api/v1/publish status=200")


def test_openapi_document_is_public_and_names_every_route(
        api_broker: tuple[BrokerProcess, str]) -> None:
    import json

    from hbroker.admin.openapi import DOCUMENT

    _, base = api_broker
    status, body, headers = get(f"{base}/api/v1/openapi.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    served = json.loads(body)
    assert served == json.loads(json.dumps(DOCUMENT))
    assert {"/api/v1/clients", "/api/v1/clients/{client_id}", "/api/v1/sessions",
            "/api/v1/retained/{topic}", "/api/v1/publish", "/api/v1/config"} \
        <= set(served["paths"])
