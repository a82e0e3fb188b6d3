"""``/docs``: Swagger UI over ``/openapi.json``, with a Content-Security-Policy of its own.

Every response carries ``default-src 'none'`` (``CONTENT_SECURITY_POLICY``), which would stop Swagger UI's script
from running. This page brings its own policy instead, as narrow as the page allows: the bundle and its stylesheet
from the CDN FastAPI uses, the one inline script by its hash (computed from the page itself, so it follows FastAPI's
template), ``/openapi.json`` and "try it out" requests to this origin only.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse

CDN = "https://cdn.jsdelivr.net"
INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)

router = APIRouter()


def swagger_page(title: str, openapi_url: str = "/openapi.json") -> HTMLResponse:
    page = get_swagger_ui_html(openapi_url=openapi_url, title=f"{title} — API")
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in INLINE_SCRIPT.findall(bytes(page.body))
    )
    policy = (
        f"default-src 'none'; script-src {CDN} {hashes}; style-src {CDN} 'unsafe-inline'; "
        "img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    )
    page.headers["Content-Security-Policy"] = policy
    return page


@router.get("/docs", include_in_schema=False)
async def api_docs() -> HTMLResponse:
    return swagger_page("Spotik")
