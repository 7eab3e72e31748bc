"""HTTP(S) requests to the admin listener, and its /metrics parsed into samples."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable

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
