"""Failures of the API's dependencies become the standard error shape, with the right status."""

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from psycopg_pool import PoolTimeout

from api import errors


@pytest.mark.parametrize(
    "failure", [psycopg.OperationalError("connection refused"), PoolTimeout("no connection")]
)
def test_postgres_unreachable_is_a_503_to_retry(failure: Exception) -> None:
    app = FastAPI()
    errors.install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise failure

    response = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(errors.POSTGRES_RETRY_AFTER_S)
    assert response.json()["error"]["type"] == "dependency_unavailable"
