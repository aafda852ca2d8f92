"""The product catalogue upstream this challenge's environments get as ``PROVIDER_URL``.

``GET /v1/products/<id>`` with ``Authorization: Bearer {PROVIDER_TOKEN}`` answers the product
(``{"id", "name", "price_cents", "version"}``) or ``404`` after ``UPSTREAM_LATENCY_MS``, and
``429`` beyond ``UPSTREAM_RATE_LIMIT`` calls in any second; both figures are the challenge's
parameters (``challenge.yaml``, read here so that the statement and the upstream agree). The
grader sets and changes products through the admin API; a few samples are there from the
start for a learner to try.
"""

from pathlib import Path

import yaml

from grading.provider import Endpoint, main

PARAMETERS = yaml.safe_load(Path(__file__).with_name("challenge.yaml").read_text())["parameters"]
PRODUCTS = Endpoint(
    "GET",
    "/v1/products/{id}",
    records=True,
    latency_ms=int(PARAMETERS["UPSTREAM_LATENCY_MS"]),
    rate_limit=int(PARAMETERS["UPSTREAM_RATE_LIMIT"]),
)
SAMPLES = {
    f"/v1/products/sample-{i}": {
        "id": f"sample-{i}",
        "name": f"Sample product {i}",
        "price_cents": 100 * i,
        "version": 1,
    }
    for i in range(1, 6)
}

if __name__ == "__main__":
    main([PRODUCTS], records=SAMPLES)
