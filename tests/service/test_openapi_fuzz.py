"""Property test of the published OpenAPI spec: no generated request makes the service answer 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.service.conftest import TOKEN

EXAMPLES_PER_OPERATION = 25


@pytest.mark.slow
def test_no_generated_request_gets_a_server_error(queue_service):
    service = queue_service
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /jobs", "GET /jobs", "GET /jobs/{job_id}", "GET /jobs/{job_id}/logs", "POST /jobs/{job_id}/cancel",
        "POST /searches", "GET /models", "GET /models/{name}", "PUT /models/{name}/aliases/{alias}", "GET /health",
        "POST /evaluations", "GET /models/{name}/versions/{version}/card"}
    for operation in operations:
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def call(case):
            response = case.call(base_url=service.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
            assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text)

        call()
