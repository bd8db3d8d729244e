"""Interactive docs at /api/v1/docs: a page and every file it loads, served from here."""

from __future__ import annotations

import re

from flask.testing import FlaskClient

from tests.unit.api.kit import body


def test_the_docs_page_loads_only_files_this_api_serves(client: FlaskClient) -> None:
    page = client.get("/api/v1/docs")

    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    loaded = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r'url: "([^"]+)"', html)
    assert len(loaded) == 4  # icon, style sheet, script, the OpenAPI document
    assert not re.search(r"https?://", html)  # nothing from elsewhere: it works offline
    assert "validatorUrl: null" in html  # Swagger UI would call a public validator
    for url in loaded:
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert len(answer.data) > 1000, url
    spec = body(client.get("/api/v1/openapi.json"))
    assert spec["openapi"].startswith("3.1")
    assert "/api/v1/docs" in spec["paths"]


def test_the_docs_serve_no_other_file(client: FlaskClient) -> None:
    for name in ("index.html", "..%2f..%2fpyproject.toml", "swagger-ui.js.map", "LICENSE"):
        answer = client.get(f"/api/v1/docs/{name}")
        assert answer.status_code == 404 and body(answer)["error"] == "not_found"


def test_the_script_is_cached_and_revalidated(client: FlaskClient) -> None:
    first = client.get("/api/v1/docs/swagger-ui-bundle.js")
    again = client.get(
        "/api/v1/docs/swagger-ui-bundle.js", headers={"If-None-Match": first.headers["ETag"]}
    )

    assert "max-age" in first.headers["Cache-Control"]
    assert again.status_code == 304
