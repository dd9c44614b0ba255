"""A client that leaves mid-request is nobody's error."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from tests.support.gateway import Gateway


def test_client_gone_while_sending_its_body_is_not_an_error(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    key = gateway.create_key("1")
    caplog.set_level(logging.ERROR)
    with socket.create_connection(("127.0.0.1", gateway.server.port)) as raw:
        raw.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                    b"authorization: Bearer " + key.encode() + b"\r\ncontent-length: 100\r\n\r\n{\"model\":")
        time.sleep(0.2)
    time.sleep(0.3)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert gateway.balance(key) == 1_000_000
