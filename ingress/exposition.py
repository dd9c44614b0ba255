"""``GET /metrics``: the text exposition of a process's metrics, on the
ingress's own port (``ingress.routes.metrics``) and, for the other roles,
on ``GATEWAYZ_METRICS_PORT`` (``serve_metrics``).

Open by default, as Prometheus expects a target to be; with
``GATEWAYZ_METRICS_TOKEN`` set it asks for that bearer token.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ingress.errors import plain_error
from ingress.gauges import LiveGauges
from schema.metrics import MetricsRegistry


class Exposition:
    """What one process's ``/metrics`` answers: its registry, after reading
    the gauges kept elsewhere (``gauges``) if it has them."""

    def __init__(self, registry: MetricsRegistry, gauges: LiveGauges | None = None, *,
                 token: SecretStr | None = None) -> None:
        self._registry = registry
        self._gauges = gauges
        self._token = token.get_secret_value().encode() if token is not None else None

    async def respond(self, request: Request) -> Response:
        if self._token is not None:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").encode()
            if not secrets.compare_digest(given, self._token):
                return plain_error(request, "GET /metrics needs the metrics token (Authorization: Bearer …)",
                                   401, headers={"www-authenticate": "Bearer"})
        if self._gauges is not None:
            await self._gauges.refresh()
        return Response(generate_latest(self._registry.exposed), media_type=CONTENT_TYPE_LATEST)


def metrics_app(exposition: Exposition) -> Starlette:
    return Starlette(routes=[Route("/metrics", exposition.respond, methods=["GET"])])


async def serve_metrics(exposition: Exposition, host: str, port: int) -> None:
    """Serve ``/metrics`` on ``host:port`` until cancelled (a role's ``--metrics-port``)."""
    config = uvicorn.Config(metrics_app(exposition), host=host, port=port, log_level="warning",
                            access_log=False, lifespan="off")
    await _BesideRole(config).serve()


class _BesideRole(uvicorn.Server):
    """A server that leaves the process's signals to the role it serves
    beside (uvicorn's own would take SIGTERM from it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
