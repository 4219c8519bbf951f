"""moed-http's /metrics read with prometheus_client's OpenMetrics parser (the strict one: a
malformed exposition raises). Prints the samples as JSON, {"name{label=value}": value}, for
daemon/http/tests/bridge.rs to check. Usage: metrics_client.py SOCKET"""

import json
import sys

import httpx
from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main(socket: str) -> None:
    with httpx.Client(transport=httpx.HTTPTransport(uds=socket)) as client:
        reply = client.get("http://localhost/metrics")
    reply.raise_for_status()
    assert reply.headers["content-type"].startswith("application/openmetrics-text"), reply.headers
    samples = {}
    types = {}
    for family in text_string_to_metric_families(reply.text):
        types[family.name] = family.type
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
    print(json.dumps({"types": types, "samples": samples}))


if __name__ == "__main__":
    main(sys.argv[1])
