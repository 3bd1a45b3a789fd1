"""GET /health behind API Gateway (REST API, Lambda proxy integration): a cheap check for the API stage.

Answers 200 ``{"status": "ok", "function_version": "<n>"}`` with no dependency call, so a smoke check can
tell the stage, the integration and the alias are wired, and which published version answered
(``AWS_LAMBDA_FUNCTION_VERSION``, set by Lambda; ``$LATEST`` when unset). Any method but GET or HEAD gets 405.
"""

from __future__ import annotations

import json
import os
from typing import Any

HEADERS = {"content-type": "application/json", "cache-control": "no-store"}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    method = event.get("httpMethod") if isinstance(event, dict) else None
    if method is not None and method not in ("GET", "HEAD"):
        body = {"code": "method_not_allowed", "message": "use GET"}
        return {"statusCode": 405, "headers": {**HEADERS, "allow": "GET, HEAD"}, "body": json.dumps(body)}
    body = {"status": "ok", "function_version": os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")}
    return {"statusCode": 200, "headers": HEADERS, "body": json.dumps(body), "isBase64Encoded": False}
