"""Interactive API docs: Swagger UI, served by this process, reading ``openapi.json``.

The page and every file it loads come from here (Swagger UI's files ship in the
``swagger-ui-py`` package), so the docs work with no internet. "Try it out" sends real
requests: authorise with a bearer token first.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from flask import Response, send_file

from conveyor.orchestrator.errors import NotFound, PluginError

from .openapi import PREFIX
from .routing import Call

#: The files of Swagger UI the page loads, and their media types.
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}
#: How long a browser may keep a file of the docs (they change only with an upgrade).
CACHE_SECONDS = 3600

PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Conveyor API</title>
  <link rel="icon" type="image/png" href="{PREFIX}/docs/favicon-32x32.png">
  <link rel="stylesheet" href="{PREFIX}/docs/swagger-ui.css">
</head>
<body>
  <div id="docs"></div>
  <script src="{PREFIX}/docs/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "{PREFIX}/openapi.json",
      dom_id: "#docs",
      deepLinking: true,
      validatorUrl: null
    }});
  </script>
</body>
</html>
"""


def docs_page(call: Call[None, None]) -> Response:
    """Interactive docs of this API (Swagger UI), from its OpenAPI document."""
    assets()  # a missing install is a 500 here, not a blank page
    return Response(PAGE, mimetype="text/html")


def docs_asset(call: Call[None, None], asset: str) -> Response:
    """A file the docs page loads (Swagger UI's script, style sheet and icon)."""
    if asset not in ASSETS:
        raise NotFound(f"no file {asset!r} of the docs")
    return send_file(
        assets() / asset, mimetype=ASSETS[asset], max_age=CACHE_SECONDS, conditional=True
    )


@cache
def assets() -> Path:
    """Where Swagger UI's files are installed."""
    spec = importlib.util.find_spec("swagger_ui")  # found, not imported
    for folder in (spec.submodule_search_locations or []) if spec else []:
        static = Path(folder) / "static"
        if all((static / name).is_file() for name in ASSETS):
            return static
    raise PluginError("the interactive docs are not installed (the swagger-ui-py package)")
