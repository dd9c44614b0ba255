"""The OpenAPI descriptions of the wire formats that no pydantic model carries:
the hot endpoints' request and answer bodies, both dialects' error bodies,
and the ways a caller authenticates.

Documentation only. The hot endpoints check their bodies by hand
(``schema.openai``, ``schema.anthropic``, ``schema.media``), with no model
per request; these JSON Schemas say exactly what those checks accept and
refuse, and nothing more: a field the gateway passes through unchecked is
left unconstrained (``additionalProperties: true``, no ``type``), since the
provider is the authority on it. Where a check changes, its schema here
changes with it; the fuzz test (``tests/contract/test_openapi_fuzz.py``)
sends both what these schemas allow and what they refuse.
"""

from __future__ import annotations

from typing import Any

from schema import anthropic, openai
from schema.files import MAX_EXPIRY, MAX_FORM_FIELDS, MIN_EXPIRY, PURPOSES, UPLOAD_PURPOSES
from schema.media import ENCODING_FORMATS, MAX_EMBEDDING_INPUTS, MAX_IMAGES, RESPONSE_FORMATS, SIZE

JSONSchema = dict[str, Any]

# orjson reads a larger JSON integer as a float, which no integer check takes.
JSON_INTEGER_MAX = 2**64 - 1
# What ``str.strip`` removes (a regular expression's character class): a prompt of these alone is empty.
STRIPPED = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def ref(name: str) -> JSONSchema:
    return {"$ref": f"#/components/schemas/{name}"}


def _whole(low: int, high: int | None = None, *, nullable: bool = False, about: str = "") -> JSONSchema:
    """An integer in a range; ``null`` too where the check reads it as unset."""
    schema: JSONSchema = {"type": ["integer", "null"] if nullable else "integer", "minimum": low}
    if high is not None:
        schema["maximum"] = high
    if about:
        schema["description"] = about
    return schema


def _permissive(required: list[str], properties: JSONSchema, description: str = "") -> JSONSchema:
    """An object of which only ``properties`` are described: any other field passes."""
    schema: JSONSchema = {"type": "object", "required": required, "properties": properties,
                          "additionalProperties": True}
    if description:
        schema["description"] = description
    return schema


def decimal_string() -> JSONSchema:
    """A non-negative decimal number written as a string (``"0.15"``)."""
    return {"type": "string", "pattern": r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)$"}


_MODEL = {"type": "string", "minLength": 1,
          "description": "A model id from `GET /v1/models`; `provider/model` pins one provider."}
_STREAM = {"type": "boolean", "default": False}
_PASSED_ON = "Every other field is passed to the provider untouched: the provider is the authority on it."

CHAT_MESSAGE = _permissive(
    ["role"],
    {
        "role": {"enum": sorted(openai.ROLES)},
        "content": {"description": "A string or an array of content parts, passed on untouched."},
    },
)

CHAT_REQUEST = _permissive(
    ["model", "messages"],
    {
        "model": _MODEL,
        "messages": {"type": "array", "minItems": 1, "items": ref("ChatMessage")},
        "stream": _STREAM,
        "stream_options": {"type": ["object", "null"], "additionalProperties": True,
                           "properties": {"include_usage": {"description": "`true`: a last chunk carries the usage."}}},
        "max_tokens": _whole(1, openai.MAX_TOKENS_LIMIT, nullable=True,
                             about="Held for in full before the job runs; without it the model's output limit is."),
        "max_completion_tokens": _whole(1, openai.MAX_TOKENS_LIMIT, nullable=True),
        "n": _whole(1, openai.MAX_CHOICES, nullable=True, about="Choices to generate; each is held for."),
    },
    f"OpenAI's chat-completions request. {_PASSED_ON}",
)

ANTHROPIC_MESSAGE = _permissive(
    ["role", "content"],
    {
        "role": {"enum": sorted(anthropic.ROLES)},
        "content": {"anyOf": [{"type": "string"}, {"type": "array"}],
                    "description": "A string or an array of content blocks."},
    },
)

MESSAGES_REQUEST = _permissive(
    ["model", "max_tokens", "messages"],
    {
        "model": _MODEL,
        "max_tokens": _whole(1, openai.MAX_TOKENS_LIMIT),
        "messages": {"type": "array", "minItems": 1, "items": ref("AnthropicMessage")},
        "system": {"anyOf": [{"type": "string"}, {"type": "array"}, {"type": "null"}],
                   "description": "A string or an array of text blocks."},
        "stream": _STREAM,
    },
    f"Anthropic's Messages request. {_PASSED_ON} A provider of another dialect gets it "
    "translated, and a field the translation cannot express is refused with a 400.",
)

_NON_EMPTY_TEXT = {"type": "string", "minLength": 1}
_TOKEN_ID = _whole(0, JSON_INTEGER_MAX)
_TOKEN_IDS = {"type": "array", "minItems": 1, "items": _TOKEN_ID}

EMBEDDINGS_REQUEST = _permissive(
    ["model", "input"],
    {
        "model": _MODEL,
        "input": {
            "anyOf": [
                _NON_EMPTY_TEXT,
                {"type": "array", "minItems": 1, "maxItems": MAX_EMBEDDING_INPUTS, "items": _NON_EMPTY_TEXT},
                {"type": "array", "minItems": 1, "maxItems": MAX_EMBEDDING_INPUTS, "items": _TOKEN_ID},
                {"type": "array", "minItems": 1, "maxItems": MAX_EMBEDDING_INPUTS, "items": _TOKEN_IDS},
            ],
            "description": "A string, or an array of strings, of token ids, or of token id arrays.",
        },
        "dimensions": _whole(1, JSON_INTEGER_MAX, nullable=True),
        "encoding_format": {"enum": [*ENCODING_FORMATS, None]},
        "stream": {"enum": [False, None], "description": "Embeddings are not streamed."},
    },
    f"OpenAI's embeddings request. {_PASSED_ON}",
)

IMAGES_REQUEST = _permissive(
    ["model", "prompt"],
    {
        "model": _MODEL,
        "prompt": {"type": "string", "pattern": f"[^{STRIPPED}]", "description": "Not blank."},
        "n": _whole(1, MAX_IMAGES, nullable=True, about="Images to generate; each is held for."),
        "size": {"anyOf": [{"type": "string", "pattern": SIZE.pattern}, {"type": "null"}],
                 "description": "`auto` or WIDTHxHEIGHT in pixels."},
        "response_format": {"enum": [*RESPONSE_FORMATS, None]},
        "stream": {"enum": [False, None], "description": "Images are not streamed."},
    },
    f"OpenAI's image-generation request. {_PASSED_ON}",
)

# Answers. Only what every provider's answer carries is required: the gateway
# relays the provider's answer, adding ``usage.cost`` where there is a usage.

_USAGE = {"type": "object", "additionalProperties": True,
          "properties": {"cost": {"type": "string", "description": "What this request was charged, in credits."}}}

CHAT_COMPLETION = _permissive(
    ["id", "object", "created", "model", "choices"],
    {
        "id": {"type": "string"},
        "object": {"const": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object", "additionalProperties": True,
                                               "properties": {"index": {"type": "integer"},
                                                              "message": {"type": "object"},
                                                              "finish_reason": {"type": ["string", "null"]}}}},
        "usage": _USAGE,
    },
)

MESSAGE = _permissive(
    ["id", "type", "role", "content", "model", "usage"],
    {
        "id": {"type": "string"},
        "type": {"const": "message"},
        "role": {"const": "assistant"},
        "content": {"type": "array", "items": {"type": "object", "required": ["type"], "additionalProperties": True}},
        "model": {"type": "string"},
        "stop_reason": {"type": ["string", "null"]},
        "usage": {"type": "object", "additionalProperties": True},
    },
)

EMBEDDINGS = _permissive(
    ["object", "data"],
    {
        "object": {"const": "list"},
        "data": {"type": "array", "items": {
            "type": "object", "required": ["index", "embedding"], "additionalProperties": True,
            "properties": {"object": {"const": "embedding"}, "index": {"type": "integer"},
                           "embedding": {"anyOf": [{"type": "array", "items": {"type": "number"}},
                                                   {"type": "string", "description": "base64 float32s"}]}}}},
        "model": {"type": "string"},
        "usage": _USAGE,
    },
)

IMAGES = _permissive(
    ["created", "data"],
    {
        "created": {"type": "integer"},
        "data": {"type": "array", "items": {
            "type": "object", "additionalProperties": True,
            "properties": {"url": {"type": "string"}, "b64_json": {"type": "string"},
                           "revised_prompt": {"type": "string"}}}},
        "usage": _USAGE,
    },
)

OPENAI_ERROR: JSONSchema = {
    "type": "object",
    "description": "OpenAI's error format.",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"], "description": "The field at fault, if one is."},
                       "code": {"type": ["string", "null"]}},
    }},
}

ANTHROPIC_ERROR: JSONSchema = {
    "type": "object",
    "description": "Anthropic's error format.",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {"type": "object", "required": ["type", "message"],
                  "properties": {"type": {"type": "string"}, "message": {"type": "string"}}},
    },
}

# The Files API (``ingress.routes.files``): the upload's form as the SDK sends
# it (``expires_after`` as two bracketed fields), and OpenAI's objects.
FILE_UPLOAD: JSONSchema = {
    "type": "object",
    "required": ["file", "purpose"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "purpose": {"enum": sorted(UPLOAD_PURPOSES)},
        "expires_after[anchor]": {"const": "created_at"},
        "expires_after[seconds]": {"type": "integer", "minimum": MIN_EXPIRY, "maximum": MAX_EXPIRY},
    },
    "maxProperties": MAX_FORM_FIELDS,
}
FILE_OBJECT: JSONSchema = {
    "type": "object",
    "required": ["id", "object", "bytes", "created_at", "expires_at", "filename", "purpose", "status"],
    "properties": {
        "id": {"type": "string"}, "object": {"const": "file"}, "bytes": {"type": "integer", "minimum": 0},
        "created_at": {"type": "integer"}, "expires_at": {"type": ["integer", "null"]},
        "filename": {"type": "string"}, "purpose": {"enum": sorted(PURPOSES)}, "status": {"const": "processed"},
    },
}
FILE_LIST: JSONSchema = {
    "type": "object",
    "required": ["object", "data", "first_id", "last_id", "has_more"],
    "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": ref("FileObject")},
                   "first_id": {"type": ["string", "null"]}, "last_id": {"type": ["string", "null"]},
                   "has_more": {"type": "boolean"}},
}
FILE_DELETED: JSONSchema = {
    "type": "object",
    "required": ["id", "object", "deleted"],
    "properties": {"id": {"type": "string"}, "object": {"const": "file"}, "deleted": {"const": True}},
}

MESSAGE_BATCH_CREATE: JSONSchema = {
    "type": "object",
    "required": ["requests"],
    "properties": {"requests": {
        "type": "array", "minItems": 1, "maxItems": 100_000,
        "items": {"type": "object", "required": ["custom_id", "params"],
                  "properties": {"custom_id": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                                 # A request of /v1/messages that does not stream.
                                 "params": {"allOf": [ref("MessagesRequest"),
                                                      {"properties": {"stream": {"const": False}}}]}}}}},
}

SCHEMAS: dict[str, JSONSchema] = {
    "ChatMessage": CHAT_MESSAGE,
    "ChatCompletionRequest": CHAT_REQUEST,
    "ChatCompletion": CHAT_COMPLETION,
    "AnthropicMessage": ANTHROPIC_MESSAGE,
    "MessagesRequest": MESSAGES_REQUEST,
    "Message": MESSAGE,
    "EmbeddingsRequest": EMBEDDINGS_REQUEST,
    "Embeddings": EMBEDDINGS,
    "ImagesRequest": IMAGES_REQUEST,
    "Images": IMAGES,
    "OpenAIError": OPENAI_ERROR,
    "AnthropicError": ANTHROPIC_ERROR,
    "FileUpload": FILE_UPLOAD,
    "FileObject": FILE_OBJECT,
    "FileList": FILE_LIST,
    "FileDeleted": FILE_DELETED,
    "MessageBatchCreate": MESSAGE_BATCH_CREATE,
}

SECURITY_SCHEMES: dict[str, JSONSchema] = {
    "ApiKey": {"type": "http", "scheme": "bearer",
               "description": "An API key as `Authorization: Bearer <key>`, as OpenAI's SDKs send it."},
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key",
                     "description": "An API key as `x-api-key: <key>`, as Anthropic's SDKs send it."},
    "AdminToken": {"type": "http", "scheme": "bearer",
                   "description": "`GATEWAYZ_ADMIN_TOKEN` as `Authorization: Bearer <token>`: the admin API only."},
}
