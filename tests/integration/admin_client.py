"""HTTP(S) requests to the admin listener (its API calls with JSON), and its /metrics parsed
into samples."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

WAIT = 10.0


def get(url: str, token: str | None = None, context: ssl.SSLContext | None = None
        ) -> tuple[int, str, dict[str, str]]:
    """(status, body, headers) of GET `url`, error statuses included."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=WAIT, context=context) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def call(method: str, url: str, token: str | None = None, body: Any = None,
         data: bytes | None = None) -> tuple[int, Any]:
    """(status, body) of an API call: the body parsed as JSON when it is JSON, else text.
    `body` is sent as JSON; `data` as it is."""
    if body is not None:
        data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            status, raw, kind = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, raw, kind = exc.code, exc.read(), exc.headers
    text = raw.decode()
    if kind.get("Content-Type", "").startswith("application/json"):
        return status, json.loads(text)
    return status, text


def wait_for(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """`check()` again until it is truthy (returned); AssertionError naming `what` after
    `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)  # between two polls: the condition is polled, not waited out


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a /metrics page: (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(base: str, token: str | None = None, context: ssl.SSLContext | None = None
           ) -> Samples:
    status, body, _ = get(f"{base}/metrics", token, context)
    assert status == 200, (status, body)
    return parse(body)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def wait_for_metrics(base: str, ready: Callable[[Samples], bool], token: str | None = None,
                     timeout: float = WAIT) -> Samples:
    """Scrape until `ready(samples)`; the last samples in the AssertionError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(base, token)
        if ready(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics not as expected within {timeout} s: {samples}")
        time.sleep(0.05)  # between two scrapes: the condition is polled, not waited out
