"""Property-based API testing: schemathesis generates requests from the service's own OpenAPI
schema (valid and invalid: wrong types, missing fields, odd strings, random uploads) and
every answer must be a non-5xx JSON error or a valid response that matches the schema."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from inference_runs import responsive_run_dir
from skinlesion.inference.predictor import Predictor
from skinlesion.service.app import create_app

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 30
"""Per operation and generation mode: the whole file runs well under a minute on 2 cores."""


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> schemathesis.BaseSchema:
    predictor = Predictor.from_run(responsive_run_dir(tmp_path_factory))
    app = create_app(predictor, warmup=False, max_upload_mb=1)
    # schemathesis calls the ASGI app without a lifespan; the app reads its model from here.
    app.state.predictor = predictor
    return schemathesis.openapi.from_asgi("/openapi.json", app)


# schemathesis.pytest.from_fixture would be the idiomatic way, but schemathesis 4.x reads
# pytest's private Function._nodeid, which pytest 9 removed; Hypothesis runs the cases here.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=lambda m: m.value)
def test_no_server_errors_and_json_answers(api_schema: schemathesis.BaseSchema,
                                           mode: GenerationMode) -> None:
    """Valid (positive) and schema-violating (negative) requests for every operation."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /v1/predict", "GET /v1/health", "GET /v1/model"}
    statuses: dict[str, set[int]] = {}
    for op in operations:
        inputs = sum(len(getattr(op, part)) for part in ("query", "body", "headers",
                                                          "path_parameters", "cookies"))
        if mode is GenerationMode.NEGATIVE and not inputs:
            continue  # nothing to get wrong in a parameterless GET
        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), database=None)
        def run(case: schemathesis.Case) -> None:
            label = f"{case.method.upper()} {case.path}"
            response = case.call()
            statuses.setdefault(label, set()).add(response.status_code)
            # Never a 5xx, whatever the request; every API answer is JSON.
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
            assert response.status_code < 500, (label, response.status_code, response.text)
            if case.path.startswith("/v1/"):
                ctype = response.headers.get("content-type") or [""]  # schemathesis: a list
                assert ctype[0].startswith("application/json"), (
                    label, response.status_code, response.headers)

        run()
    # The generated uploads did reach the model: some were answered with a prediction,
    # or (negative mode) all were refused with a client error.
    predict = statuses["POST /v1/predict"]
    assert predict and max(predict) < 500
    if mode is GenerationMode.NEGATIVE:
        assert predict <= {400, 413, 422}, predict


def test_the_schema_covers_the_api(api_schema: schemathesis.BaseSchema) -> None:
    paths = set(api_schema.raw_schema["paths"])
    assert {"/v1/predict", "/v1/health", "/v1/model"} <= paths
    post = api_schema.raw_schema["paths"]["/v1/predict"]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert {"413", "422", "503"} <= set(post["responses"])

