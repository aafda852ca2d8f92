"""The rendering service this challenge's environments get as ``PROVIDER_URL``.

``POST /v1/render`` with ``Authorization: Bearer {PROVIDER_TOKEN}``, an optional
``Idempotency-Key`` header and ``{"input": "<text>"}`` takes ``RENDER_MS`` (a range in
``challenge.yaml``'s parameters; each input always takes the same time within it), then answers
``200 {"id", "status": "accepted", "result": "<32 hex digits>"}``, the result a function of the
input the grader checks. Every accepted call without a key, or with a new key, is a render
billed; a key is honoured as Stripe documents it (``grading.provider``): the same key and body
replay the first answer, another body gets ``422``, a call while the first with its key is still
being answered gets ``409``. The grader reads the record of calls to count each job's renders.
"""

from pathlib import Path

import yaml

from grading.provider import Endpoint, main

PARAMETERS = yaml.safe_load(Path(__file__).with_name("challenge.yaml").read_text())["parameters"]
LO, HI = (int(ms) for ms in str(PARAMETERS["RENDER_MS"]).split("-"))
RENDER = Endpoint("POST", "/v1/render", required=("input",), work_ms=(LO, HI), result_of="input")

if __name__ == "__main__":
    main([RENDER])
