"""The approvals API, the analyst console and the approvals timer.

The HTTP functions hand the request to one ASGI app (`aegis.approvals.web`, through
`func.AsgiMiddleware`): `/api/approvals/...` needs a function key as well as a signed-in
approver; `/console/...` is for people in a browser, signed in by App Service Authentication
(Entra ID), which the app requires (`aegis.approvals.identity`). host.json sets no route prefix,
so the paths are the app's own.

The timer expires overdue approvals, escalates undecided ones to the plan's next on-call contact
and keeps the Teams cards up to date.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache

import azure.functions as func
import structlog

from aegis import runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = structlog.get_logger("aegis.approvals")
METHODS = [func.HttpMethod.GET, func.HttpMethod.POST]


@lru_cache(maxsize=1)
def _asgi() -> func.AsgiMiddleware:
    return func.AsgiMiddleware(runtime.console_app())  # type: ignore[no-untyped-call]


@bp.route(route="api/approvals/{*rest}", methods=METHODS, auth_level=func.AuthLevel.FUNCTION)
async def approvals_api(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return await _asgi().handle_async(req, context)  # type: ignore[no-any-return]


@bp.route(route="console/{*rest}", methods=METHODS, auth_level=func.AuthLevel.ANONYMOUS)
async def console(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return await _asgi().handle_async(req, context)  # type: ignore[no-any-return]


# Teams sends the approval cards' actions here: outside App Service Authentication (infra excludes
# the path), proven by the Bot Framework's signed token instead (`aegis.approvals.botauth`)
@bp.route(route="api/messages", methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.ANONYMOUS)
async def bot_messages(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return await _asgi().handle_async(req, context)  # type: ignore[no-any-return]


@bp.timer_trigger(arg_name="timer", schedule="30 * * * * *", run_on_startup=False, use_monitor=True)
def approvals_timer(timer: func.TimerRequest) -> None:
    counts = runtime.sweep()
    log.info("approvals_run", **asdict(counts))
