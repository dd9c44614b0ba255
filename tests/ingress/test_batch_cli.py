"""``gatewayz batch``: a file submitted, followed to its end with a
progress line, its results downloaded, and a batch cancelled, through the
HTTP API of a running gateway with an API key."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from click.testing import CliRunner

from ingress.batch_cli import progress_line
from ingress.cli import main
from tests.support.gateway import Gateway


def requests_file(path: Path, count: int, text: str = "hello") -> Path:
    path.write_bytes(b"".join(orjson.dumps({
        "custom_id": f"line-{index}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "fake-small", "messages": [{"role": "user", "content": f"{text} {index}"}]}}) + b"\n"
        for index in range(count)))
    return path


def run(gateway: Gateway, key: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["batch", *args], env={"GATEWAYZ_BASE_URL": gateway.url,
                                                             "GATEWAYZ_API_KEY": key})
    return result.exit_code, result.stdout, result.stderr


def test_submit_wait_and_download_the_results(gateway: Gateway, tmp_path: Path) -> None:
    key = gateway.create_key("10")
    code, out, err = run(gateway, key, "submit", str(requests_file(tmp_path / "in.jsonl", 5)), "--wait",
                         "--metadata", "team=search")
    assert code == 0, (out, err)
    batch_id = out.splitlines()[0]
    assert batch_id.startswith("batch_")
    assert "5/5 done, 0 failed" in err and "(completed)" in err  # the last progress line
    assert f"{batch_id}: completed, 5 completed, 0 failed of 5" in out

    code, out, _ = run(gateway, key, "status", batch_id)
    assert (code, out.strip()) == (0, f"{batch_id}: completed, 5 completed, 0 failed of 5")

    code, out, err = run(gateway, key, "results", batch_id, "-o", str(tmp_path / "out.jsonl"),
                         "--errors", str(tmp_path / "errors.jsonl"))
    assert code == 0, (out, err)
    lines = [orjson.loads(raw) for raw in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert sorted(item["custom_id"] for item in lines) == [f"line-{index}" for index in range(5)]
    assert all(item["response"]["body"]["choices"][0]["message"]["content"].startswith("Echo: hello")
               for item in lines)
    assert (tmp_path / "errors.jsonl").read_bytes() == b""


def test_a_bad_file_and_a_bad_key_are_clear_errors(gateway: Gateway, tmp_path: Path) -> None:
    key = gateway.create_key("10")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"custom_id": "a"}\n')
    code, out, err = run(gateway, key, "submit", str(bad), "--wait")
    assert code == 1 and ": failed, 0 completed, 0 failed of 0" in out and "line 1:" in out, (out, err)

    code, _, err = run(gateway, "sk-not-a-key", "status", "batch_nope")
    assert code == 1 and "HTTP 401" in err


def test_cancel(gateway: Gateway, tmp_path: Path) -> None:
    key = gateway.create_key("10")
    code, out, _ = run(gateway, key, "submit", str(requests_file(tmp_path / "in.jsonl", 3, "pace:2:0:200")))
    assert code == 0
    batch_id = out.strip()
    time.sleep(0.2)
    code, out, err = run(gateway, key, "cancel", batch_id)
    assert code == 0, err
    assert out.startswith(f"{batch_id}: cancel")  # cancelling, or cancelled if it was still validating


def test_the_progress_line() -> None:
    counts = {"total": 200, "completed": 90, "failed": 10}
    assert progress_line("in_progress", counts, 20.0).strip() == (
        "[###############...............] 100/200 done, 10 failed, 20.0/s, ETA 5s (in_progress)")
    assert "ETA ?" in progress_line("validating", {"total": 0, "completed": 0, "failed": 0}, 0.0)
