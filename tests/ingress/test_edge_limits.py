"""The edge's read limits on a real server (``ingress.server.http_config``,
``ingress.body_limits``) in front of a small app that reports what reached
it: header size (431), read timeouts (408), body size (413) and media type
(415), each in the dialect of its path, and what they must not refuse
(slow but steady bodies, idle keep-alive connections, a server that is
itself not reading). The whole gateway's answers: tests/contract/test_edge_limits.py."""

from __future__ import annotations

import asyncio
import select
import time
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest
from starlette.types import Receive, Scope, Send

from ingress.body_limits import BodyLimits
from schema.settings import Settings
from tests.support.raw_http import closed_by_server, connect, read_response, request_head
from tests.support.servers import ServerThread

MAX_HEADER_BYTES = 4096
MAX_BODY_BYTES = 2_000_000
READ_TIMEOUT = 1.0
KEEP_ALIVE = 3  # uvicorn's timeout_keep_alive, seconds
WAIT = "x-wait-before-reading"  # seconds the app waits before it reads the body
UNREAD = "x-answer-unread"  # the app answers without reading the body


class Recorder:
    """Reads the whole body (after ``WAIT`` seconds; not at all with
    ``UNREAD``) and answers with its size; remembers by path what each
    request came to."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = dict(scope["headers"])
        await asyncio.sleep(float(headers.get(WAIT.encode(), b"0")))
        size = 0
        while UNREAD.encode() not in headers:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.seen[scope["path"]] = "client gone"
                return
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self.seen[scope["path"]] = f"read {size}"
        body = orjson.dumps({"read": size})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def server(recorder: Recorder) -> Iterator[ServerThread]:
    settings = Settings(max_header_bytes=MAX_HEADER_BYTES, max_body_bytes=MAX_BODY_BYTES, read_timeout=READ_TIMEOUT)
    with ServerThread(BodyLimits(recorder, settings.max_body_bytes), name="edge", settings=settings,
                      timeout_keep_alive=KEEP_ALIVE) as running:
        yield running


def openai_path() -> str:
    return f"/v1/chat/completions/{uuid.uuid4().hex}"


def anthropic_path() -> str:
    return f"/v1/messages/{uuid.uuid4().hex}"  # under /v1/messages: Anthropic's dialect


def assert_error(body: object, path: str, status_type: str, code: str) -> None:
    """An error in the dialect of ``path``."""
    if path.startswith("/v1/messages"):
        assert isinstance(body, dict) and body["type"] == "error"
        assert body["error"]["type"] == status_type and body["error"]["message"]
    else:
        assert isinstance(body, dict) and set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["code"] == code and body["error"]["message"]


# Header size

def test_header_block_within_the_limit_is_served(server: ServerThread, recorder: Recorder) -> None:
    path = openai_path()
    response = httpx.get(server.url + path, headers={"x-big": "a" * (MAX_HEADER_BYTES - 500)})
    assert response.status_code == 200
    assert recorder.seen[path] == "read 0"


@pytest.mark.parametrize("path_of", [openai_path, anthropic_path])
def test_header_block_over_the_limit_is_431_in_its_dialect(server: ServerThread, recorder: Recorder,
                                                           path_of: object) -> None:
    path = path_of()  # type: ignore[operator]
    with connect(server.port) as raw:
        raw.sendall(request_head("GET", path, {"authorization": "Bearer " + "a" * MAX_HEADER_BYTES}))
        response = read_response(raw)
        assert response is not None and response.status == 431
        assert response.headers["connection"] == "close"
        assert_error(response.json(), path, "invalid_request_error", "request_header_fields_too_large")
        assert closed_by_server(raw)
    assert path not in recorder.seen


def test_headers_over_the_limit_are_refused_when_they_arrive_in_one_read_with_the_body(
        server: ServerThread, recorder: Recorder) -> None:
    path = openai_path()
    body = b"{}" * 20_000
    with connect(server.port) as raw:
        raw.sendall(request_head("POST", path, {"x-big": "a" * MAX_HEADER_BYTES, "content-length": str(len(body))})
                    + body)
        response = read_response(raw)
        assert response is not None and response.status == 431
    assert path not in recorder.seen


def test_a_body_read_with_small_headers_is_not_taken_for_headers(server: ServerThread, recorder: Recorder) -> None:
    """Bytes are counted per socket read: a read holding a small header
    block and a body many times the header limit is served."""
    path = openai_path()
    body = b" " * (MAX_HEADER_BYTES * 20)
    with connect(server.port) as raw:
        raw.sendall(request_head("POST", path, {"content-length": str(len(body))}) + body)
        response = read_response(raw)
        assert response is not None and response.status == 200 and response.json() == {"read": len(body)}


def test_an_endless_header_is_cut_while_it_is_still_arriving(server: ServerThread, recorder: Recorder) -> None:
    path = openai_path()
    with connect(server.port) as raw:
        raw.sendall(request_head("GET", path, {})[:-4] + b"\r\nx-endless: ")
        try:
            # Never more than the kernel's buffers and what the server read before refusing.
            for _ in range(100_000):
                raw.sendall(b"a" * 16384)
                if select.select([raw], [], [], 0)[0]:
                    break
        except OSError:
            pass  # the server closed the connection, the refusal sent before
        response = read_response(raw)
        assert response is not None and response.status == 431
        assert closed_by_server(raw)
    assert path not in recorder.seen


def test_pipelined_requests_with_bodies_are_each_served(server: ServerThread, recorder: Recorder) -> None:
    first, second = openai_path(), openai_path()
    big = b" " * (MAX_HEADER_BYTES * 3)
    with connect(server.port) as raw:
        raw.sendall(request_head("POST", first, {"content-length": str(len(big))}) + big
                    + request_head("POST", second, {"content-length": "2"}) + b"{}")
        answers = [read_response(raw), read_response(raw)]
    assert [(answer.status, answer.json()) for answer in answers if answer] == [(200, {"read": len(big)}),
                                                                              (200, {"read": 2})]


# Read timeouts

@pytest.mark.parametrize("path_of", [openai_path, anthropic_path])
def test_stalled_header_block_is_408_then_closed(server: ServerThread, recorder: Recorder, path_of: object) -> None:
    path = path_of()  # type: ignore[operator]
    with connect(server.port) as raw:
        raw.sendall(request_head("POST", path, {"content-type": "application/json"})[:-4] + b"\r\ncontent-le")
        response = read_response(raw)  # within raw_http.TIMEOUT, far above READ_TIMEOUT
        assert response is not None and response.status == 408
        assert_error(response.json(), path, "invalid_request_error", "request_timeout")
        assert closed_by_server(raw)
    assert path not in recorder.seen


def test_a_new_connection_that_sends_nothing_is_closed_unanswered(server: ServerThread) -> None:
    with connect(server.port) as raw:
        assert read_response(raw) is None


@pytest.mark.parametrize("path_of", [openai_path, anthropic_path])
def test_stalled_body_is_408_and_the_app_sees_the_client_gone(server: ServerThread, recorder: Recorder,
                                                              path_of: object) -> None:
    path = path_of()  # type: ignore[operator]
    with connect(server.port) as raw:
        raw.sendall(request_head("POST", path, {"content-length": "100"}) + b'{"model": ')
        response = read_response(raw)
        assert response is not None and response.status == 408
        assert_error(response.json(), path, "invalid_request_error", "request_timeout")
        assert closed_by_server(raw)
    assert recorder.seen[path] == "client gone"


def test_a_slow_but_steady_body_is_not_cut(server: ServerThread, recorder: Recorder) -> None:
    """The body's timeout is silence, not its whole length."""
    path = openai_path()
    pieces = [b" " * 10] * 8
    with connect(server.port) as raw:
        raw.sendall(request_head("POST", path, {"content-length": str(sum(map(len, pieces)))}))
        for piece in pieces:  # 1.6 s in all, never silent for more than a fifth of the timeout
            time.sleep(READ_TIMEOUT / 5)
            raw.sendall(piece)
        response = read_response(raw)
        assert response is not None and response.status == 200 and response.json() == {"read": 80}


def test_an_idle_keep_alive_connection_outlives_the_read_timeout(server: ServerThread) -> None:
    """Between requests uvicorn's keep-alive timeout applies."""
    with connect(server.port) as raw:
        for _ in range(2):
            raw.sendall(request_head("GET", openai_path(), {}))
            response = read_response(raw)
            assert response is not None and response.status == 200
            time.sleep(READ_TIMEOUT * 2)


def test_a_request_answered_before_its_body_arrived_keeps_a_keep_alive_timeout(server: ServerThread) -> None:
    """uvicorn arms its keep-alive timeout with the answer, and the body's
    bytes that follow cancel it: the gateway closes the idle connection
    itself. The header block's bytes, counted per read, are not held against
    the request once its body has come."""
    path = openai_path()
    head = request_head("POST", path, {"content-length": str(2 * MAX_HEADER_BYTES * 5), UNREAD: "1"})
    with connect(server.port) as raw:
        raw.sendall(head[:20])
        time.sleep(0.2)  # the header block starts a read of its own, then the next read brings a body too
        raw.sendall(head[20:] + b" " * MAX_HEADER_BYTES * 5)
        answer = read_response(raw)
        assert answer is not None and answer.status == 200 and answer.json() == {"read": 0}
        raw.sendall(b" " * MAX_HEADER_BYTES * 5)
        raw.sendall(request_head("GET", openai_path(), {}))
        again = read_response(raw)
        assert again is not None and again.status == 200
        raw.sendall(request_head("POST", openai_path(), {"content-length": "4", UNREAD: "1"}))
        unread = read_response(raw)
        assert unread is not None and unread.status == 200
        raw.sendall(b"{}{}")
        assert closed_by_server(raw)  # after KEEP_ALIVE seconds, within raw_http.TIMEOUT


def test_a_client_the_server_stopped_reading_is_not_late(server: ServerThread) -> None:
    """The app reads the body only after twice the timeout: flow control stops
    reading the socket meanwhile, and the client waiting is not a stall."""
    body = b" " * 1_000_000
    with connect(server.port) as raw:
        raw.sendall(request_head("POST", openai_path(), {"content-length": str(len(body)), WAIT: str(READ_TIMEOUT * 2)})
                    + body)
        response = read_response(raw)
        assert response is not None and response.status == 200 and response.json() == {"read": len(body)}


def test_a_client_waiting_for_100_continue_is_not_late(server: ServerThread) -> None:
    with connect(server.port) as raw:
        raw.sendall(request_head("POST", openai_path(), {"content-length": "2", "expect": "100-continue",
                                                         WAIT: str(READ_TIMEOUT * 2)}))
        interim = read_response(raw)
        assert interim is not None and interim.status == 100
        raw.sendall(b"{}")
        response = read_response(raw)
        assert response is not None and response.status == 200 and response.json() == {"read": 2}


# Body size and media type

@pytest.mark.parametrize("path_of", [openai_path, anthropic_path])
def test_a_body_announced_over_the_limit_is_refused_before_it_is_sent(server: ServerThread, recorder: Recorder,
                                                                      path_of: object) -> None:
    path = path_of()  # type: ignore[operator]
    with connect(server.port) as raw:
        raw.sendall(request_head("POST", path, {"content-length": str(MAX_BODY_BYTES + 1)}))
        response = read_response(raw)
        assert response is not None and response.status == 413
        assert_error(response.json(), path, "request_too_large", "request_too_large")
        assert closed_by_server(raw)
    assert path not in recorder.seen


@pytest.mark.parametrize("path_of", [openai_path, anthropic_path])
def test_a_chunked_body_over_the_limit_is_refused_at_the_limit(server: ServerThread, recorder: Recorder,
                                                               path_of: object) -> None:
    path = path_of()  # type: ignore[operator]
    pieces = iter([b" " * 100_000] * 1000)  # 100 MB, were it all read
    response = httpx.post(server.url + path, content=pieces, timeout=30)
    assert response.status_code == 413
    assert_error(response.json(), path, "request_too_large", "request_too_large")
    assert path not in recorder.seen
    assert next(pieces, None) is not None  # the client was stopped well before its end


def test_a_chunked_body_within_the_limit_reaches_the_app_whole(server: ServerThread, recorder: Recorder) -> None:
    path = openai_path()
    response = httpx.post(server.url + path, content=iter([b" " * 100_000] * 20))
    assert response.status_code == 200 and response.json() == {"read": MAX_BODY_BYTES}
    assert recorder.seen[path] == f"read {MAX_BODY_BYTES}"


@pytest.mark.parametrize("media_type", ["text/plain", "application/x-www-form-urlencoded", "text/json",
                                        "multipart/form-data; boundary=x", "application/jsonl"])
@pytest.mark.parametrize("path_of", [openai_path, anthropic_path])
def test_a_body_that_is_not_json_by_its_type_is_415(server: ServerThread, recorder: Recorder, media_type: str,
                                                    path_of: object) -> None:
    path = path_of()  # type: ignore[operator]
    response = httpx.post(server.url + path, content=b"{}", headers={"content-type": media_type})
    assert response.status_code == 415
    assert_error(response.json(), path, "invalid_request_error", "unsupported_media_type")
    assert path not in recorder.seen


@pytest.mark.parametrize("media_type", ["application/json", "application/json; charset=utf-8",
                                        "APPLICATION/JSON;Charset=UTF-8", "application/merge-patch+json", "", None])
def test_json_and_a_missing_type_are_accepted(server: ServerThread, media_type: str | None) -> None:
    headers = {"content-type": media_type} if media_type is not None else {}
    response = httpx.post(server.url + openai_path(), content=b"{}", headers=headers)
    assert response.status_code == 200 and response.json() == {"read": 2}


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_request_without_a_body_needs_no_json_type(server: ServerThread, method: str) -> None:
    response = httpx.request(method, server.url + openai_path(), headers={"content-type": "text/plain"})
    assert response.status_code == 200
