"""Operations endpoints: /livez, /readyz, /status, /metrics.

Readiness is data-aware: the store must answer and the configured embedder must be the one
that made the store's vectors; anything else is a 503 listing the failing checks. The app
adds the backup and guard checks (memvault/server/app.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from memvault.errors import MemvaultError
from memvault.memory import Memory
from memvault.server.auth import Principal, require_admin
from memvault.server.deps import Check, Context
from memvault.server.locations import LocationHider, caller_is_admin

router = APIRouter(tags=["operations"])

def store_check(memory: Memory) -> Check:
    try:
        meta = memory.store.meta()
        memory.store.last_seq()
    except MemvaultError as exc:
        return {"name": "store", "ok": False, "message": str(exc), "code": exc.code}
    except Exception as exc:  # e.g. a driver error the store did not translate
        return {"name": "store", "ok": False, "message": f"{type(exc).__name__}: {exc}"}
    return {"name": "store", "ok": True,
            "message": f"{meta.backend} store {meta.store_id} reachable"}


def embedder_check(memory: Memory) -> Check:
    try:
        identity = memory.embedder_identity()
    except MemvaultError as exc:
        return {"name": "embedder", "ok": False, "message": str(exc), "code": exc.code}
    except Exception as exc:
        return {"name": "embedder", "ok": False, "message": f"{type(exc).__name__}: {exc}"}
    return {"name": "embedder", "ok": True,
            "message": f"{identity.key} is the store's active embedder"}


@router.get("/livez", summary="The process is alive")
def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Ready to serve: 200, or 503 with the failing checks",
            responses={503: {"description": "the failing checks; where the data lives (paths, "
                                            "hosts, database and user names) only for admin"}})
def readyz(request: Request, context: Context) -> JSONResponse:
    memory = context.runtime.memory
    redact = context.redact
    hide = None if caller_is_admin(request) else LocationHider(context.settings)
    checks = []
    for check in context.readiness_checks:
        try:
            result = check(memory)
        except Exception as exc:  # a broken check is a failing check, not a 500
            result = {"name": getattr(check, "__name__", "check"), "ok": False,
                      "message": f"{type(exc).__name__}: {exc}"}
        result["message"] = redact(str(result.get("message", "")))
        if hide is not None:
            result["message"] = hide(result["message"])
        checks.append(result)
    failing = [c for c in checks if not c["ok"]]
    body = {"status": "fail" if failing else "ok", "checks": checks, "failing": failing}
    return JSONResponse(body, status_code=503 if failing else 200)


@router.get("/status", summary="The same JSON as `memvault status --json`")
def status(context: Context, _: Principal = Depends(require_admin)) -> JSONResponse:
    from memvault.guard.status import status_report

    return JSONResponse(status_report(context.runtime.memory, context.runtime.guard))


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(context: Context, _: Principal = Depends(require_admin)) -> Response:
    return Response(generate_latest(context.metrics),
                    media_type=CONTENT_TYPE_LATEST)
