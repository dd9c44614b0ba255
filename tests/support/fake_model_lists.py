"""Fake providers' model lists on loopback, one per path prefix, for tests
of refreshing the catalog.

``/<name>/v1/models`` answers the OpenAI shape (``{"object": "list",
"data": [...]}``, entries as given: OpenRouter-style ``pricing`` included),
``/<name>/v1beta/models`` the Gemini shape (``{"models": [...]}``, two per
page, paged by ``nextPageToken`` as the real API may). Each provider wants
its own key, sent its own way (``Authorization: Bearer`` or
``x-goog-api-key``), like the real APIs. ``/<name>/v1/chat/completions`` is
``loadtests.fake_upstream``'s, so a listed model can be used.

Each provider's ``command`` changes its next answers, in the command
language of ``loadtests.fake_upstream``:

- ``fail:<status>`` answers that status with an error body that quotes the
  credential it was sent (as careless APIs do), so tests see it redacted;
- ``hang`` never answers; ``notobject`` answers a JSON array of numbers;
- ``garbage`` answers 200 with HTML; ``empty`` lists no models.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from loadtests.fake_upstream import FakeUpstream

GEMINI_PAGE = 2


@dataclass
class ListedProvider:
    key: str
    auth: str = "bearer"  # or "x-goog-api-key"
    models: list[dict[str, Any]] = field(default_factory=list)
    command: str | None = None
    seen: list[dict[str, str]] = field(default_factory=list)  # headers of each /models request


class FakeModelLists:
    def __init__(self) -> None:
        self.url = ""  # set by whoever serves it
        self.providers: dict[str, ListedProvider] = {}
        self._chat = FakeUpstream()
        self.app = Starlette(routes=[
            Route("/{name}/v1/models", self.openai_models, methods=["GET"]),
            Route("/{name}/v1beta/models", self.gemini_models, methods=["GET"]),
            Route("/{name}/v1/chat/completions", self.chat, methods=["POST"]),
        ])

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        return self._chat.requests

    def add(self, name: str, provider: ListedProvider) -> ListedProvider:
        self.providers[name] = provider
        return provider

    def base_url(self, name: str, *, gemini: bool = False) -> str:
        return f"{self.url}/{name}/{'v1beta' if gemini else 'v1'}"

    async def _refusal(self, request: Request) -> tuple[ListedProvider | None, Response | None]:
        provider = self.providers.get(request.path_params["name"])
        if provider is None:
            return None, JSONResponse({"error": {"message": "no such provider"}}, status_code=404)
        provider.seen.append(dict(request.headers))
        presented = (request.headers.get("x-goog-api-key") if provider.auth == "x-goog-api-key"
                     else request.headers.get("authorization", "").removeprefix("Bearer "))
        if presented != provider.key:
            return provider, JSONResponse({"error": {"message": "Incorrect API key provided"}}, status_code=401)
        command, _, argument = (provider.command or "").partition(":")
        if command == "fail":
            message = f"fake failure {argument} for credential {presented}"
            return provider, JSONResponse({"error": {"message": message}}, status_code=int(argument))
        if command == "hang":
            await asyncio.sleep(3600)
        if command == "notobject":
            return provider, JSONResponse([1, 2, 3])
        if command == "garbage":
            return provider, Response("<html>maintenance</html>", media_type="text/html")
        return provider, None

    async def openai_models(self, request: Request) -> Response:
        provider, refused = await self._refusal(request)
        if refused is not None:
            return refused
        assert provider is not None
        data = [] if provider.command == "empty" else provider.models
        return JSONResponse({"object": "list", "data": data})

    async def gemini_models(self, request: Request) -> Response:
        provider, refused = await self._refusal(request)
        if refused is not None:
            return refused
        assert provider is not None
        models = [] if provider.command == "empty" else provider.models
        start = int(request.query_params.get("pageToken") or 0)
        page: dict[str, Any] = {"models": models[start:start + GEMINI_PAGE]}
        if start + GEMINI_PAGE < len(models):
            page["nextPageToken"] = str(start + GEMINI_PAGE)
        return JSONResponse(page)

    async def chat(self, request: Request) -> Response:
        return await self._chat.chat(request)
