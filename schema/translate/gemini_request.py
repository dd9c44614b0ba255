"""OpenAI chat completion requests as Google Gemini ``GenerateContentRequest``s
(``schema.translate.gemini`` brings the answers back).

``system`` and ``developer`` messages become ``systemInstruction``
(all of them, in order: Gemini has one). ``user`` and ``assistant`` messages
become ``contents`` turns with roles ``user`` and ``model``; consecutive turns
of one role are merged, since Gemini wants them to alternate. Text is a
``text`` part; a base64 data URL (image, ``input_audio``, ``file_data``) is an
``inlineData`` part; an http(s) or ``gs://`` image URL is a ``fileData`` part
(Gemini fetches public URLs itself; the gateway never downloads anything),
typed from the URL's extension. Assistant ``tool_calls`` become
``functionCall`` parts, and ``tool`` messages ``functionResponse`` parts of a
``user`` turn, named after the call they answer; their content goes as the
``response`` object when it is a JSON object, else as ``{"content": ...}``.
``tools`` become ``functionDeclarations`` (``parametersJsonSchema``: JSON
Schema as given), ``tool_choice`` becomes ``toolConfig.functionCallingConfig``
(``auto`` AUTO, ``none`` NONE, ``required`` ANY, a named function ANY with
``allowedFunctionNames``; a function declared ``strict`` makes AUTO
VALIDATED, Gemini's schema-checked calls). ``generationConfig`` takes
``temperature``, ``top_p``, ``max_completion_tokens``/``max_tokens``,
``stop``, ``n``, ``seed``, the penalties, ``top_k`` (not OpenAI's, but
OpenAI-compatible clients send it and Gemini has it), ``response_format`` (JSON mode and
JSON Schema) and ``reasoning_effort`` (a thinking budget, as Google's own
OpenAI endpoint maps it).

Dropped, as hints with no Gemini counterpart that change nothing the client
relies on: ``user``, ``metadata``, ``store``, ``service_tier``,
``prompt_cache_key``, ``safety_identifier``, ``prediction``, ``verbosity``,
``stream_options`` (Gemini streams always report usage), a message's
``name``, an image's ``detail``, ``logprobs: false``, ``parallel_tool_calls:
true``, ``modalities: ["text"]``; ``null`` and empty values of any field.

Refused with ``Untranslatable`` (a 400 naming the field): ``logit_bias``,
``logprobs``/``top_logprobs``, audio output (``audio``, other
``modalities``), ``web_search_options``, the legacy
``functions``/``function_call`` and ``function`` messages,
``parallel_tool_calls: false``, tools other than functions, uploaded
``file_id``s, image URLs whose type their extension does not tell, tool call
arguments that are not a JSON object, values of the wrong type, and any
field not named here. Nothing but ``Untranslatable`` comes out of a bad
request: the ingress translates every request before it admits it.

Call ids and thought signatures. Gemini gives its calls no ids, so each gets
``call_<24 hex>``. Thinking models sign a turn's calls (``thoughtSignature``)
and Gemini 3 refuses a later request whose calls lost it, while OpenAI
clients keep nothing but the id; so a signature travels inside the id
(``call_<hex>_ts_<signature as URL-safe base64>``) and goes back on its
``functionCall`` part when the client sends the conversation again. A model
turn whose calls carry no signature (history from another model) gets the
value Gemini documents for that case on its first call.
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import urlsplit

import orjson

from schema.translate import Untranslatable

# Gemini's documented value for a function call it did not sign itself.
UNSIGNED_CALL = "skip_thought_signature_validator"
# Google's OpenAI-compatible endpoint maps reasoning efforts to these budgets.
THINKING_BUDGETS = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".gif": "image/gif", ".heic": "image/heic", ".heif": "image/heif"}
AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}

_NUMBERS = {"temperature": "temperature", "top_p": "topP", "presence_penalty": "presencePenalty",
            "frequency_penalty": "frequencyPenalty"}
_INTEGERS = {"n": "candidateCount", "seed": "seed", "top_k": "topK", "max_completion_tokens": "maxOutputTokens",
             "max_tokens": "maxOutputTokens"}
_MAPPED = frozenset({"messages", "stop", "tools", "tool_choice", "response_format", "reasoning_effort", "logprobs",
                     "parallel_tool_calls", "modalities", *_NUMBERS, *_INTEGERS})
_HINTS = frozenset({"user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier",
                    "prediction", "verbosity", "stream_options"})
_REFUSED = {
    "logit_bias": "Gemini has no logit bias",
    "top_logprobs": "log probabilities are not translated for Gemini",
    "audio": "Gemini models answer in text here",
    "web_search_options": "web search is not translated for Gemini",
    "functions": "the legacy functions are not translated; use `tools`",
    "function_call": "the legacy function call is not translated; use `tool_choice`",
}
_SIGNED_ID = re.compile(r"^call_[0-9a-f]{24}_ts_([A-Za-z0-9_-]+)$")


def _refused(param: str, reason: str) -> Untranslatable:
    return Untranslatable(f"`{param}` cannot be sent to a Gemini model: {reason}", param=param)


def request_from_openai(payload: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request (no ``model``/``stream``) as a ``GenerateContentRequest``."""
    given = {name: value for name, value in payload.items() if value is not None and value != {} and value != []}
    for name, reason in _REFUSED.items():
        if name in given:
            raise _refused(name, reason)
    unknown = sorted(set(given) - _MAPPED - _HINTS)
    if unknown:
        raise _refused(unknown[0], "it is not a field Gemini models take")
    if given.get("logprobs") not in (None, False):
        raise _refused("logprobs", "log probabilities are not translated for Gemini")
    if given.get("parallel_tool_calls") not in (None, True):
        raise _refused("parallel_tool_calls", "Gemini may always call several functions at once")
    if given.get("modalities") not in (None, ["text"]):
        raise _refused("modalities", "Gemini models answer in text here")

    system, contents = _conversation(given.get("messages"))
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    if "tools" in given:
        declarations, strict = _declarations(given["tools"])
        calling = _function_calling(given.get("tool_choice", "auto"), declarations, strict)
        request["tools"] = [{"functionDeclarations": declarations}]
        request["toolConfig"] = {"functionCallingConfig": calling}
    elif given.get("tool_choice", "none") not in ("none", "auto"):
        raise _refused("tool_choice", "there are no `tools` to choose from")
    config = _generation_config(given)
    if config:
        request["generationConfig"] = config
    return request


def _conversation(messages: object) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The system parts, and the ``contents`` turns."""
    if not isinstance(messages, list) or not messages:
        raise _refused("messages", "it must be a non-empty array")
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # tool call id -> function name, for the results that answer them
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(message, dict):
            raise _refused(where, "a message must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system += [{"text": text} for text in _texts(message.get("content"), where, "system instructions")]
        elif role == "user":
            _append(contents, "user", _user_parts(message.get("content"), where))
        elif role == "assistant":
            _append(contents, "model", _model_parts(message, where, call_names))
        elif role == "tool":
            _append(contents, "user", [_function_response(message, where, call_names)])
        elif role == "function":
            raise _refused(f"{where}.role", "legacy function messages are not translated; use `tool` messages")
        else:
            raise _refused(f"{where}.role", f"{role!r} is not a role")
    if not contents:
        raise _refused("messages", "Gemini needs a user or assistant message besides the system prompt")
    return system, contents


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    if not parts:
        return
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _texts(content: object, where: str, what: str) -> list[str]:
    """The non-empty texts of a content that may hold only text (``refusal``
    parts count as text)."""
    if isinstance(content, str):
        return [content] if content else []
    if content is None:
        return []
    if not isinstance(content, list):
        raise _refused(f"{where}.content", "a content must be a string or an array of parts")
    texts = []
    for index, part in enumerate(content):
        kind = _object(part).get("type")
        value = _object(part).get(kind) if kind in ("text", "refusal") else None
        if not isinstance(value, str):
            raise _refused(f"{where}.content.{index}", f"Gemini takes only text in {what}")
        if value:
            texts.append(value)
    return texts


def _user_parts(content: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return [{"text": text} for text in _texts(content, where, "this message")]
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        at = f"{where}.content.{index}"
        kind = _object(part).get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise _refused(f"{at}.text", "it must be a string")
            if part["text"]:
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            parts.append(_image(part.get("image_url"), f"{at}.image_url"))
        elif kind == "input_audio":
            parts.append(_audio(part.get("input_audio"), f"{at}.input_audio"))
        elif kind == "file":
            parts.append(_file(part.get("file"), f"{at}.file"))
        else:
            raise _refused(at, f"content parts of type {kind!r} are not translated for Gemini")
    return parts


def _image(image: object, at: str) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise _refused(f"{at}.url", "an image needs a URL")
    if url.startswith("data:"):
        return _inline(url, at)
    try:
        address = urlsplit(url)
    except ValueError:
        raise _refused(f"{at}.url", "it is not a URL") from None
    if address.scheme not in ("http", "https", "gs") or not address.netloc:
        raise _refused(f"{at}.url", "an image URL must be http(s), gs:// or a base64 data URL")
    name = address.path.rsplit("/", 1)[-1]
    suffix = name[name.rfind("."):].lower() if "." in name else ""
    if suffix not in IMAGE_TYPES:
        raise _refused(f"{at}.url", f"Gemini needs to know an image URL's type, told by its extension "
                                    f"({', '.join(sorted(IMAGE_TYPES))}); send other images as base64 data URLs")
    return {"fileData": {"mimeType": IMAGE_TYPES[suffix], "fileUri": url}}


def _inline(url: str, at: str) -> dict[str, Any]:
    """A ``data:<type>;base64,<data>`` URL as an ``inlineData`` part."""
    header, comma, data = url.partition(",")
    mime_type, _, encoding = header.removeprefix("data:").partition(";")
    if not comma or encoding != "base64" or "/" not in mime_type or not data:
        raise _refused(at, "a data URL must be data:<type>;base64,<data>")
    return {"inlineData": {"mimeType": mime_type, "data": data}}


def _audio(audio: object, at: str) -> dict[str, Any]:
    data = _object(audio).get("data")
    if not isinstance(data, str) or not data:
        raise _refused(f"{at}.data", "audio needs base64 data")
    mime_type = AUDIO_TYPES.get(str(_object(audio).get("format")))
    if mime_type is None:
        raise _refused(f"{at}.format", f"the audio format must be one of {', '.join(sorted(AUDIO_TYPES))}")
    return {"inlineData": {"mimeType": mime_type, "data": data}}


def _file(file: object, at: str) -> dict[str, Any]:
    if isinstance(_object(file).get("file_data"), str):
        return _inline(_object(file)["file_data"], f"{at}.file_data")
    if _object(file).get("file_id"):
        raise _refused(f"{at}.file_id", "uploaded files are not translated for Gemini; send `file_data`")
    raise _refused(at, "a file needs `file_data` (a base64 data URL)")


def _model_parts(message: dict[str, Any], where: str, call_names: dict[str, str]) -> list[dict[str, Any]]:
    for field in ("function_call", "audio"):
        if message.get(field):
            raise _refused(f"{where}.{field}", "it is not translated for Gemini")
    parts: list[dict[str, Any]] = [{"text": text} for text in _texts(message.get("content"), where, "this message")]
    if isinstance(message.get("refusal"), str) and message["refusal"] and not parts:
        parts.append({"text": message["refusal"]})
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _refused(f"{where}.tool_calls", "it must be an array")
    call_parts = [_function_call(call, f"{where}.tool_calls.{index}", call_names) for index, call in enumerate(calls)]
    if call_parts and not any("thoughtSignature" in part for part in call_parts):
        call_parts[0]["thoughtSignature"] = UNSIGNED_CALL
    return parts + call_parts


def _function_call(call: object, at: str, call_names: dict[str, str]) -> dict[str, Any]:
    if _object(call).get("type", "function") != "function":
        raise _refused(f"{at}.type", "only function calls are translated for Gemini")
    function = _object(_object(call).get("function"))
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise _refused(f"{at}.function.name", "a tool call needs a function name")
    call_id = _object(call).get("id")
    if not isinstance(call_id, str) or not call_id:
        raise _refused(f"{at}.id", "a tool call needs an id")
    arguments = function.get("arguments") or "{}"
    try:
        args = orjson.loads(arguments) if isinstance(arguments, str) else None
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        raise _refused(f"{at}.function.arguments", "Gemini needs a call's arguments to be a JSON object")
    call_names[call_id] = name
    part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
    signed = _SIGNED_ID.match(call_id)
    if signed:
        part["thoughtSignature"] = _standard_base64(signed.group(1))
    return part


def _function_response(message: dict[str, Any], where: str, call_names: dict[str, str]) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or call_id not in call_names:
        raise _refused(f"{where}.tool_call_id", "a tool result must answer a tool call of an earlier assistant "
                                                "message (Gemini needs the function's name)")
    text = "".join(_texts(message.get("content"), where, "tool results"))
    try:
        response = orjson.loads(text)
    except orjson.JSONDecodeError:
        response = None
    if not isinstance(response, dict):
        response = {"content": text}
    return {"functionResponse": {"name": call_names[call_id], "response": response}}


def _declarations(tools: object) -> tuple[list[dict[str, Any]], bool]:
    """The ``functionDeclarations``, and whether any function is ``strict``."""
    if not isinstance(tools, list):
        raise _refused("tools", "it must be an array")
    declarations, strict = [], False
    for index, tool in enumerate(tools):
        at = f"tools.{index}"
        if _object(tool).get("type", "function") != "function":
            raise _refused(f"{at}.type", "only function tools are translated for Gemini")
        function = _object(_object(tool).get("function"))
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise _refused(f"{at}.function.name", "a tool needs a function name")
        declaration: dict[str, Any] = {"name": name}
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise _refused(f"{at}.function.description", "it must be a string")
        if description:
            declaration["description"] = description
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _refused(f"{at}.function.parameters", "it must be a JSON Schema object")
        # Gemini refuses an object schema without properties: a function of no arguments declares none.
        if parameters and parameters.get("properties") not in (None, {}):
            declaration["parametersJsonSchema"] = parameters
        strict = strict or function.get("strict") is True
        declarations.append(declaration)
    return declarations, strict


def _function_calling(choice: object, declarations: list[dict[str, Any]], strict: bool) -> dict[str, Any]:
    auto = "VALIDATED" if strict else "AUTO"
    modes = {"auto": auto, "none": "NONE", "required": "ANY"}
    if isinstance(choice, str) and choice in modes:
        return {"mode": modes[choice]}
    chosen = _object(choice)
    if chosen.get("type") == "function":
        name = _object(chosen.get("function")).get("name")
        if isinstance(name, str) and name:
            return {"mode": "ANY", "allowedFunctionNames": [name]}
    if chosen.get("type") == "allowed_tools":
        allowed = _object(chosen.get("allowed_tools"))
        tools = allowed.get("tools")
        names = ([_object(_object(tool).get("function")).get("name") for tool in tools]
                 if isinstance(tools, list) else [])
        if names and all(isinstance(name, str) and name for name in names):
            if allowed.get("mode") == "required":
                return {"mode": "ANY", "allowedFunctionNames": names}
            if allowed.get("mode", "auto") == "auto":
                # Gemini limits names only when it must call one: AUTO is shown just the allowed declarations.
                declarations[:] = [d for d in declarations if d["name"] in names]
                return {"mode": auto}
    raise _refused("tool_choice", "it must be auto, none, required, a named function or allowed function tools")


def _generation_config(given: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for source, target in _NUMBERS.items():
        if source in given:
            if isinstance(given[source], bool) or not isinstance(given[source], int | float):
                raise _refused(source, "it must be a number")
            config[target] = given[source]
    # Reversed, so that max_completion_tokens wins over max_tokens, as at OpenAI.
    for source, target in reversed(_INTEGERS.items()):
        if source in given:
            if isinstance(given[source], bool) or not isinstance(given[source], int):
                raise _refused(source, "it must be an integer")
            config[target] = given[source]
    stop = given.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _refused("stop", "it must be a string or an array of strings")
        config["stopSequences"] = stops
    if "response_format" in given:
        config.update(_response_format(given["response_format"]))
    effort = given.get("reasoning_effort")
    if effort is not None:
        if not isinstance(effort, str) or effort not in THINKING_BUDGETS:
            raise _refused("reasoning_effort", f"it must be one of {', '.join(THINKING_BUDGETS)}")
        config["thinkingConfig"] = {"thinkingBudget": THINKING_BUDGETS[effort]}
    return config


def _response_format(response_format: object) -> dict[str, Any]:
    kind = _object(response_format).get("type")
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        schema = _object(_object(response_format).get("json_schema")).get("schema")
        if schema is not None and not isinstance(schema, dict):
            raise _refused("response_format.json_schema.schema", "a JSON Schema must be an object")
        return {"responseMimeType": "application/json", **({"responseJsonSchema": schema} if schema else {})}
    raise _refused("response_format", "it must be text, json_object or json_schema")


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def signed_call_id(signature: str | None) -> str:
    """A new tool call id, carrying the call's thought signature when it has
    one (URL-safe, so the id stays a plain token)."""
    call_id = f"call_{uuid.uuid4().hex[:24]}"
    if signature:
        call_id += "_ts_" + signature.replace("+", "-").replace("/", "_").rstrip("=")
    return call_id


def _standard_base64(urlsafe: str) -> str:
    return urlsafe.replace("-", "+").replace("_", "/") + "=" * (-len(urlsafe) % 4)
