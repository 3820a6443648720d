"""Schemathesis against the app's own OpenAPI schema: whatever it sends to any operation, with an
admin key, the app never answers 5xx or a stack trace."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from flashcast.access import create_key
from flashcast.api import create_app
from flashcast.config import Settings, StoreConfig


def test_no_5xx_for_anything_sent_to_any_operation(tmp_path_factory: pytest.TempPathFactory) -> None:
    app = create_app(Settings(store=StoreConfig(home=tmp_path_factory.mktemp("api") / "home")))
    secret = create_key(app.state.ops, "admin", by="test")[1]
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    seen: list[str] = []
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def call(case: schemathesis.Case) -> None:
            response = case.call(headers={"Authorization": f"Bearer {secret}"})
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:200])
            assert "Traceback" not in response.text
            seen.append(f"{case.method} {case.path}")

        call()
    assert len(set(seen)) == len(operations)
