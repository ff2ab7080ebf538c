"""The seed's integration flow as a FastAPI service on pg_ab's Python client.

    PG_AB_DSN="dbname=app" uvicorn app:app          (from examples/fastapi_app)

- ``POST /tests``: creates the seed's test (champion ``baseline_rule_based``, challenger
  ``llm_v2``) and starts it;
- ``POST /extract``: entity extraction with A/B testing for a user and session: the user's
  variant is asked first; the champion (``baseline_rule_based``) runs in the database, the
  challenger here (``challenger_llm_v2``, a stand-in for the model) and its entities and
  latency are handed to the pipeline, which calibrates, deduplicates and records both alike;
- ``GET /tests/{test_id}/metrics``, ``DELETE /tests/{test_id}``;
- ``GET /flags/{name}?user_id=…&plan=…&country=…``: a flag check with the user's attributes;
- ``GET /features/{key}?user_id=…``: the same through OpenFeature (``pg_ab.openfeature``).

One ``AsyncConnectionPool`` serves every request: each call commits on its own. Errors of pg_ab
become HTTP errors: 404 for an unknown test or flag, 409 for a duplicate, 422 for bad input,
409 for a wrong state."""

import os
import re
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.no_op_provider import NoOpProvider
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

import pg_ab
from pg_ab.openfeature import PgAbProvider


class NewTest(BaseModel):
    test_name: str = "integration_test"
    test_id: str | None = None
    champion_variant: str = "baseline_rule_based"
    challenger_variant: str = "llm_v2"


class ExtractRequest(BaseModel):
    text: str
    user_id: str
    session_id: str | None = None
    test_id: str | None = None
    context: dict[str, Any] | None = None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with AsyncConnectionPool(os.environ.get("PG_AB_DSN", ""), min_size=1, max_size=4) as pool:
        app.state.ab = pg_ab.AsyncClient(pool)
        api.set_provider_and_wait(PgAbProvider(async_client=app.state.ab), "example_app")
        yield
        api.set_provider(NoOpProvider(), "example_app")  # this app's domain only


app = FastAPI(title="pg_ab example", lifespan=lifespan)

STATUS = {pg_ab.NotFound: 404, pg_ab.AlreadyExists: 409, pg_ab.WrongState: 409, pg_ab.InvalidInput: 422}


@app.exception_handler(pg_ab.PgAbError)
async def pg_ab_error(request: Request, e: pg_ab.PgAbError) -> JSONResponse:
    status = next((code for cls, code in STATUS.items() if isinstance(e, cls)), 500)
    return JSONResponse({"error": e.message, "sqlstate": e.sqlstate, "hint": e.hint}, status_code=status)


def ab(request: Request) -> pg_ab.AsyncClient:
    client: pg_ab.AsyncClient = request.app.state.ab
    return client


@app.post("/tests", status_code=201)
async def create_test(body: NewTest, request: Request) -> dict[str, Any]:
    client = ab(request)
    test_id = await client.create_test(body.model_dump(exclude_none=True))
    started = await client.start_test(test_id)
    return {"test_id": test_id, "status": started.status, "stage": started.raw.get("to_stage")}


# Variants the database runs itself (its built-in extractor); any other runs here.
IN_DATABASE = {"baseline_rule_based"}
NAMES = re.compile(r"\b[A-Z][a-z]+(?:\s+[A-Z][a-zA-Z]+)*")


def challenger_llm_v2(text: str) -> list[pg_ab.Entity]:
    """A stand-in for the challenger model (an LLM call in the seed's platform): runs of
    capitalised words, a title making a person. Replace with the real model."""
    out = []
    for m in NAMES.finditer(text):
        kind = "person" if m.group().split()[0] in ("President", "Minister", "Dr") else "organization"
        out.append(pg_ab.Entity(m.group(), kind, 0.75, (m.start(), m.end())))
    return out


@app.post("/extract")
async def extract(body: ExtractRequest, request: Request) -> dict[str, Any]:
    client = ab(request)
    assignment = await client.assign(body.test_id, body.user_id, body.session_id, body.context) if body.test_id else None
    if assignment is None or assignment.variant in IN_DATABASE:
        result = await client.extract_entities(body.text, body.user_id, body.session_id, test_id=body.test_id, context=body.context)
    else:
        started = time.perf_counter()
        entities = challenger_llm_v2(body.text)
        latency_ms = (time.perf_counter() - started) * 1000
        result = await client.extract_entities(body.text, body.user_id, body.session_id, test_id=body.test_id,
                                               variant=assignment.variant, entities=entities, latency_ms=latency_ms,
                                               context=body.context)
    return {"extraction_id": str(result.extraction_id), "variant_used": result.variant_used,
            "entities": [e.to_json() for e in result.entities], "processing_metrics": dict(result.processing_metrics)}


@app.get("/tests/{test_id}/metrics")
async def metrics(test_id: str, request: Request) -> dict[str, Any]:
    return {"test_id": test_id, "metrics": await ab(request).get_test_metrics(test_id)}


@app.delete("/tests/{test_id}")
async def delete(test_id: str, request: Request) -> dict[str, Any]:
    return {"test_id": test_id, "status": (await ab(request).delete_test(test_id)).status}


@app.get("/flags/{name}")
async def flag(name: str, user_id: str, request: Request, plan: str | None = None, country: str | None = None) -> dict[str, Any]:
    context = {k: v for k, v in {"plan": plan, "country": country}.items() if v is not None}
    explanation = await ab(request).explain_flag(name, user_id, context)
    return {"flag": name, "enabled": explanation["enabled"], "reason": explanation["reason"]}


@app.get("/features/{key}")
async def feature(key: str, user_id: str, plan: str | None = None) -> dict[str, Any]:
    flags = api.get_client("example_app")
    ctx = EvaluationContext(targeting_key=user_id, attributes={"plan": plan} if plan else {})
    details = await flags.get_boolean_details_async(key, False, ctx)
    return {"key": key, "value": details.value, "reason": str(details.reason),
            "error_code": str(details.error_code) if details.error_code else None}
