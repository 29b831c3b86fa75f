"""The OpenAPI document and its pages are open by default and can be removed."""

from fastapi.testclient import TestClient

from api.main import create_app
from tests.conftest import make_settings


def test_the_api_docs_can_be_turned_off() -> None:
    for enabled, status in ((True, 200), (False, 404)):
        app = create_app(make_settings(COLONY_API_DOCS=enabled))
        client = TestClient(app)  # no lifespan: these routes need no database
        assert client.get("/openapi.json").status_code == status
        assert client.get("/docs").status_code == status
