"""What the embeddings and image-generation endpoints share: submit the job,
wait for its one answer, and price it by the same usage settlement charges
(``schema.media``), shown as ``usage.cost`` (where the answer has a
``usage``) and ``x-gatewayz-cost``."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from billing.ledger import KeyOwner
from billing.pricing import charge
from ingress.exchange import SCOPE_KEY
from ingress.runtime import Runtime
from ingress.submit import PRIORITY_HEADER, submit
from scheduler.admission import MAX_QUEUE_HEADER
from schema.errors import StreamBroken
from schema.jobs import DialectObject, JobKind
from schema.media import media_usage
from schema.money import micros_to_credits


async def media_response(request: Request, owner: KeyOwner, body: DialectObject, kind: JobKind) -> Response:
    runtime: Runtime = request.app.state.runtime
    route = runtime.catalog.route(body["model"])
    payload = {name: value for name, value in body.items() if name not in ("model", "stream")}
    submitted = await submit(runtime, owner, route, payload, stream=False, kind=kind,
                             priority=request.headers.get(PRIORITY_HEADER), receive=request.receive,
                             max_queue_ms=request.headers.get(MAX_QUEUE_HEADER),
                             exchange=request.scope[SCOPE_KEY])
    await submitted.reader.subscription.close()
    first = submitted.first
    if first["kind"] != "response" or not isinstance(first["data"], dict):
        raise StreamBroken(f"expected a response, got a {first['kind']!r} event")
    answer: DialectObject = first["data"]
    job = submitted.job
    cost = micros_to_credits(charge(media_usage(kind, job.payload, answer), job.price, job.hold).cost)
    if isinstance(answer.get("usage"), dict):
        answer["usage"]["cost"] = cost
    headers = {**submitted.headers, "x-gatewayz-cost": cost}
    return Response(orjson.dumps(answer), media_type="application/json", headers=headers)
