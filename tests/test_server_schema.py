"""Property-based run of schemathesis against the app's own OpenAPI document: whatever the
generated requests (valid or deliberately invalid), the server never answers 500 and always
sends a request id. Bounded: a few dozen examples per operation and mode, every backend."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from memvault.memory import Memory

# The memory API and its probes. /backups belongs to the backup extension, and POST /backups
# writes a full backup per example, so it is not fuzzed here.
MEMVAULT_PATHS = r"^/(memories|search|reset|configure|entities|livez|readyz|status|metrics)"
EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 10}


def test_no_server_errors(app: Any, memory: Memory) -> None:
    memory.add("I love vegetable pizza", user_id="alice", infer=False)
    memory.add("Runs every morning", user_id="alice", agent_id="coach", infer=False)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).include(
        path_regex=MEMVAULT_PATHS)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 13
    for operation in operations:
        for mode, examples in EXAMPLES.items():

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def no_500(case: Any) -> None:
                response = case.call()
                assert response.headers.get("x-request-id"), case.as_curl_command()
                case.validate_response(response, checks=[not_a_server_error])

            try:
                no_500()
            except Unsatisfiable:
                # No parameters and no body: there is nothing to make invalid.
                assert mode is GenerationMode.NEGATIVE, operation.label
                assert not operation.body and not list(operation.iter_parameters()), \
                    operation.label
