"""Reading a server's Prometheus metrics."""
from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families


def scrape(server) -> str:
    # Prometheus sends its credential as a bearer token; an API key with the metrics scope works there.
    response = requests.get(f"{server.base}/metrics", headers={"Authorization": f"Bearer {server.key}"}, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    return response.text


def samples(text: str, name: str, **labels) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
