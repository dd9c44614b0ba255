"""Translation between the wire dialects: OpenAI chat completions,
Anthropic Messages and Google Gemini ``generateContent``.

Clients speak ``openai`` (``/v1/chat/completions``) or ``anthropic``
(``/v1/messages``); providers speak ``openai``, ``anthropic`` or ``gemini``.
A job carries its payload in the client's dialect; the worker translates it
to the provider's dialect, and the provider's answer back, only when the two
differ, so a native request loses nothing. Anthropic and Gemini meet through
OpenAI's shapes.

Payloads here never hold ``model`` or ``stream``: the job carries those, and
the adapter adds them the way its protocol wants. A request that cannot be
expressed in the target dialect raises ``Untranslatable`` (a 400 naming the
field), never a silently smaller request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

from schema.errors import InvalidRequest
from schema.jobs import DialectObject, Usage

Dialect = Literal["openai", "anthropic", "gemini"]

# What a request asks for when it sets no output limit and the target
# dialect requires one (Anthropic does); admission holds at least this much.
DEFAULT_MAX_TOKENS = 4096


class Untranslatable(InvalidRequest):
    """A request field that the provider's dialect cannot express."""


class StreamTranslator(Protocol):
    """Turns one dialect's stream events into another's, in order.

    ``feed`` takes one upstream event (an OpenAI chunk, an Anthropic event's
    data with its ``type``, a Gemini ``GenerateContentResponse``) and returns
    the client's events it completes; ``finish`` is called once the upstream
    stream ended normally and returns whatever was held back (the final
    usage, ``message_stop``)."""

    def feed(self, event: DialectObject) -> list[DialectObject]: ...

    def finish(self) -> list[DialectObject]: ...


class UsageMeter(Protocol):
    """Reads the usage out of a provider's stream, event by event."""

    usage: Usage | None  # what the provider reported, when it did
    output_chars: int  # characters of output seen, for an estimate when it did not

    def feed(self, event: DialectObject) -> None: ...


from schema.translate import anthropic, gemini, openai  # noqa: E402  (the protocols above come first)

_Pair = tuple[Dialect, Dialect]

_REQUESTS = {
    ("openai", "anthropic"): anthropic.request_from_openai,
    ("anthropic", "openai"): anthropic.request_to_openai,
    ("openai", "gemini"): gemini.request_from_openai,
}
_RESPONSES = {
    ("anthropic", "openai"): anthropic.response_to_openai,
    ("openai", "anthropic"): anthropic.response_from_openai,
    ("gemini", "openai"): gemini.response_to_openai,
}
class _StreamFactory(Protocol):
    def __call__(self, *, model: str) -> StreamTranslator: ...


_STREAMS: dict[_Pair, _StreamFactory] = {
    ("anthropic", "openai"): anthropic.StreamToOpenAI,
    ("openai", "anthropic"): anthropic.StreamFromOpenAI,
    ("gemini", "openai"): gemini.StreamToOpenAI,
}
_METERS: dict[Dialect, Callable[[], UsageMeter]] = {
    "openai": openai.UsageMeter, "anthropic": anthropic.UsageMeter, "gemini": gemini.UsageMeter,
}
_USAGE = {"openai": openai.response_usage, "anthropic": anthropic.response_usage, "gemini": gemini.response_usage}


def _steps(source: Dialect, target: Dialect) -> list[_Pair]:
    """Direct when one side is OpenAI's; Anthropic and Gemini meet through it."""
    if source == target:
        return []
    if "openai" in (source, target):
        return [(source, target)]
    return [(source, "openai"), ("openai", target)]


def translate_request(payload: DialectObject, source: Dialect, target: Dialect) -> DialectObject:
    for step in _steps(source, target):
        payload = _REQUESTS[step](payload)
    return payload


def translate_response(body: DialectObject, source: Dialect, target: Dialect, *, model: str) -> DialectObject:
    for step in _steps(source, target):
        body = _RESPONSES[step](body, model=model)
    return body


class _Identity:
    def feed(self, event: DialectObject) -> list[DialectObject]:
        return [event]

    def finish(self) -> list[DialectObject]:
        return []


class _Chain:
    def __init__(self, first: StreamTranslator, second: StreamTranslator) -> None:
        self._first, self._second = first, second

    def feed(self, event: DialectObject) -> list[DialectObject]:
        return [out for middle in self._first.feed(event) for out in self._second.feed(middle)]

    def finish(self) -> list[DialectObject]:
        tail = [out for middle in self._first.finish() for out in self._second.feed(middle)]
        return tail + self._second.finish()


def stream_translator(source: Dialect, target: Dialect, *, model: str) -> StreamTranslator:
    translators: list[StreamTranslator] = [_STREAMS[step](model=model) for step in _steps(source, target)]
    if not translators:
        return _Identity()
    return translators[0] if len(translators) == 1 else _Chain(*translators)


def usage_meter(dialect: Dialect) -> UsageMeter:
    return _METERS[dialect]()


def response_usage(body: DialectObject, dialect: Dialect) -> Usage | None:
    """The usage a provider reported in a whole (non-streamed) answer."""
    return _USAGE[dialect](body)
