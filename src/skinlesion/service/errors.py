"""Every error answer is JSON ``{"detail": "<one string>"}`` (the ``ErrorBody`` schema).

:func:`install` registers the handlers: an ``HTTPException`` keeps its status and
headers, a request that fails validation gets ``422`` with FastAPI's list of problems
joined into one string, and an unexpected exception gets ``500`` with a fixed message
(the traceback goes to the log, never to the client).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

logger = logging.getLogger(__name__)


async def json_errors(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    # One string, as the schema (ErrorBody) and the web page expect, not FastAPI's list.
    parts = [f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
             for e in exc.errors()]
    return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)


async def unexpected_errors(request: Request, exc: Exception) -> JSONResponse:
    # Every answer is JSON, even a bug's; the traceback goes to the log, not the client.
    logger.error("unhandled error on %s", request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install(app: FastAPI) -> None:
    """Register the JSON error handlers on ``app``."""
    app.exception_handler(HTTPException)(json_errors)
    app.exception_handler(RequestValidationError)(invalid_request)
    app.exception_handler(Exception)(unexpected_errors)
