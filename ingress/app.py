"""The application factory. The lifespan owns every resource the app uses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from ingress.auth import Authenticator, key_secret
from ingress.catalog_refresh import open_catalog_refresh
from ingress.edge import Edge, Handler
from ingress.errors import install_error_handlers
from ingress.exposition import Exposition
from ingress.gauges import LiveGauges
from ingress.metrics import IngressMetrics
from ingress.openapi import install_openapi
from ingress.routes import (
    admin,
    batches,
    chat,
    embeddings,
    files,
    images,
    message_batches,
    messages,
    metrics,
    models,
    monitoring,
    operator_ui,
    providers,
    rankings,
    uptime,
    user,
    webhooks,
)
from ingress.routes import health as provider_health
from ingress.runtime import Runtime, open_runtime
from schema.catalog import GatewayConfig
from schema.settings import Settings

MULTIPART_OVERHEAD = 64 * 1024

# The job-submitting endpoints, served ahead of FastAPI (``ingress.edge``);
# the OpenAPI document describes the ``/v1`` ones (``ingress.openapi``).
HOT_ROUTES: dict[str, Handler] = {
    "/v1/chat/completions": chat.chat_completions,
    "/chat/completions": chat.chat_completions,
    "/v1/messages": messages.messages,
    "/v1/embeddings": embeddings.embeddings,
    "/embeddings": embeddings.embeddings,
    "/v1/images/generations": images.generate_images,
    "/images/generations": images.generate_images,
}


def create_app(
    settings: Settings,
    config: GatewayConfig,
    *,
    roles: Callable[[Runtime], None] | None = None,
    apply_migrations: bool = False,
) -> Edge:
    """``roles`` starts background roles in this process (``gatewayz serve``
    runs every pool and billing beside the HTTP API)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with open_runtime(settings, config, apply_migrations=apply_migrations) as runtime:
            # Built before the roles start: ``serve``'s pools and billing count on the same registry.
            edge.metrics = IngressMetrics(runtime.metrics)
            gauges = LiveGauges(runtime.catalog.providers, runtime.pools, runtime.breakers, runtime.balances,
                                runtime.batches.store)
            runtime.metrics.add(gauges)
            app.state.exposition = Exposition(runtime.metrics, gauges, token=settings.metrics_token)
            if roles is not None:
                roles(runtime)
            app.state.runtime = runtime
            edge.tracing = runtime.tracing
            app.state.authenticate = Authenticator(runtime.ledger, key_secret(settings))
            async with open_catalog_refresh(runtime) as catalog_refresh:
                app.state.catalog_refresh = catalog_refresh
                yield {}

    app = FastAPI(title="GatewayZ", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(rankings.router)  # before /v1/models/{model_id}, which would take its paths
    app.include_router(models.router)
    app.include_router(providers.router)
    app.include_router(user.router)
    app.include_router(batches.router)
    app.include_router(message_batches.router)
    app.include_router(admin.router)
    app.include_router(webhooks.router)
    app.include_router(uptime.router)  # before /health/providers' siblings, for the same reason
    app.include_router(provider_health.router)
    app.include_router(files.router)
    app.include_router(monitoring.router)
    app.include_router(operator_ui.router)

    @app.get("/health")
    async def health(request: Request) -> dict[str, str]:
        # Where rate limits are counted: "shared: redis", "per-process" (embedded),
        # or "degraded: per-process" while the limiter's Redis is unreachable.
        return {"status": "ok", "rate_limits": request.app.state.runtime.rate_limits.mode}

    app.include_router(metrics.router)
    install_openapi(app, config)
    edge = Edge(app, HOT_ROUTES, max_body_bytes=settings.max_body_bytes, uploads=upload_limits(settings))
    return edge


def upload_limits(settings: Settings) -> dict[str, int]:
    """The upload paths and the largest body each takes: the largest file
    plus room for the multipart framing and the form's other fields."""
    return {"/v1/files": max(settings.max_file_bytes, settings.max_batch_file_bytes) + MULTIPART_OVERHEAD}
