"""OpenAI chat completions <-> Anthropic Messages: requests, whole answers
and streams, and usage in Anthropic's shapes.

Requests map field by field; whatever has no counterpart is refused with
``Untranslatable`` (400, ``param`` naming the field), except pure hints,
which change no answer and are dropped. An answer or stream that cannot be
expressed raises ``UpstreamError`` rather than reach the client smaller.
Each module's docstring holds its part of the translation table:

- ``to_anthropic``: requests, OpenAI -> Anthropic;
- ``to_openai``: requests, Anthropic -> OpenAI;
- ``answers``: whole answers both ways, stop reasons, tool arguments;
- ``streams``: stream events both ways;
- ``usage``: token counts, read from Anthropic's answers and streams;
- ``checks``: the field checks the request translations share.
"""

from schema.translate.anthropic.answers import response_from_openai, response_to_openai
from schema.translate.anthropic.streams import StreamFromOpenAI, StreamToOpenAI
from schema.translate.anthropic.to_anthropic import request_from_openai
from schema.translate.anthropic.to_openai import request_to_openai
from schema.translate.anthropic.usage import UsageMeter, response_usage

__all__ = [
    "StreamFromOpenAI",
    "StreamToOpenAI",
    "UsageMeter",
    "request_from_openai",
    "request_to_openai",
    "response_from_openai",
    "response_to_openai",
    "response_usage",
]
