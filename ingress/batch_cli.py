"""``gatewayz batch``: the batch API from a terminal, through the HTTP API
with an API key, like any client (it needs nothing of the gateway's own
configuration).

    gatewayz batch submit requests.jsonl [--endpoint /v1/embeddings] [--wait]
    gatewayz batch status BATCH_ID
    gatewayz batch results BATCH_ID -o out.jsonl [--errors errors.jsonl]
    gatewayz batch cancel BATCH_ID

``--wait`` (and ``status --wait``) shows the batch's progress until it
ends: lines done and failed, the rate, and the time left at that rate.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx

ENDED = ("completed", "failed", "expired", "cancelled")
POLL = 1.0  # seconds between progress reads
BAR = 30  # characters


class Api:
    """The gateway's batch and file endpoints, with the caller's key."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers={"authorization": f"Bearer {api_key}"},
                                  timeout=httpx.Timeout(60.0, connect=5.0))

    def call(self, method: str, path: str, **options: Any) -> Any:
        try:
            response = self._http.request(method, path, **options)
        except httpx.HTTPError as error:
            raise click.ClickException(f"cannot reach the gateway: {error}") from None
        if response.status_code >= 400:
            raise click.ClickException(_error_message(response))
        return response.json()

    def download(self, path: str, target: Path) -> int:
        """Stream ``path`` into ``target``; the bytes written."""
        written = 0
        with self._http.stream("GET", path) as response:
            if response.status_code >= 400:
                response.read()
                raise click.ClickException(_error_message(response))
            with target.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    written += len(chunk)
        return written


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    return f"HTTP {response.status_code}: {error.get('message') if isinstance(error, dict) else error}"


api_options = [
    click.option("--base-url", envvar="GATEWAYZ_BASE_URL", default="http://127.0.0.1:8000", show_default=True,
                 help="the gateway (env GATEWAYZ_BASE_URL)"),
    click.option("--api-key", envvar=["GATEWAYZ_API_KEY", "OPENAI_API_KEY"], required=True,
                 help="an API key of the gateway (env GATEWAYZ_API_KEY or OPENAI_API_KEY)"),
]


def with_api(command: Any) -> Any:
    for option in reversed(api_options):
        command = option(command)
    return command


@click.group()
def batch() -> None:
    """Submit and follow batches (OpenAI's Batch API) through the HTTP API."""


@batch.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--endpoint", default="/v1/chat/completions", show_default=True,
              type=click.Choice(["/v1/chat/completions", "/v1/embeddings"]))
@click.option("--metadata", multiple=True, metavar="KEY=VALUE", help="kept with the batch (repeatable)")
@click.option("--wait", is_flag=True, help="show progress until the batch ends")
@with_api
def submit(file: Path, endpoint: str, metadata: tuple[str, ...], wait: bool, base_url: str, api_key: str) -> None:
    """Upload FILE (JSONL requests) and start a batch on it; prints the batch id."""
    pairs = dict(item.split("=", 1) for item in metadata if "=" in item)
    if len(pairs) != len(metadata):
        raise click.BadParameter("metadata must be KEY=VALUE", param_hint="--metadata")
    api = Api(base_url, api_key)
    with file.open("rb") as content:  # httpx streams it in chunks
        uploaded = api.call("POST", "/v1/files", data={"purpose": "batch"},
                            files={"file": (file.name, content, "application/jsonl")})
    created = api.call("POST", "/v1/batches", json={"input_file_id": uploaded["id"], "endpoint": endpoint,
                                                   "completion_window": "24h", "metadata": pairs or None})
    click.echo(created["id"])
    if wait:
        _follow(api, created["id"])


@batch.command()
@click.argument("batch_id")
@click.option("--wait", is_flag=True, help="show progress until the batch ends")
@with_api
def status(batch_id: str, wait: bool, base_url: str, api_key: str) -> None:
    """Show a batch's status and counts."""
    api = Api(base_url, api_key)
    if wait:
        _follow(api, batch_id)
        return
    _summary(api.call("GET", f"/v1/batches/{batch_id}"))


@batch.command()
@click.argument("batch_id")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="where the answered lines go")
@click.option("--errors", type=click.Path(dir_okay=False, path_type=Path), help="where the failed lines go")
@with_api
def results(batch_id: str, output: Path, errors: Path | None, base_url: str, api_key: str) -> None:
    """Download a batch's results (so far, if it still runs)."""
    api = Api(base_url, api_key)
    found = api.call("GET", f"/v1/batches/{batch_id}")
    if found["output_file_id"] is None:
        raise click.ClickException(f"batch {batch_id} has no results ({found['status']})")
    written = api.download(f"/v1/files/{found['output_file_id']}/content", output)
    click.echo(f"{output}: {written} bytes")
    if errors is not None:
        written = api.download(f"/v1/files/{found['error_file_id']}/content", errors)
        click.echo(f"{errors}: {written} bytes")


@batch.command()
@click.argument("batch_id")
@with_api
def cancel(batch_id: str, base_url: str, api_key: str) -> None:
    """Cancel a batch: lines not started are cancelled, those running finish."""
    _summary(Api(base_url, api_key).call("POST", f"/v1/batches/{batch_id}/cancel"))


def _summary(found: dict[str, Any]) -> None:
    counts = found["request_counts"]
    click.echo(f"{found['id']}: {found['status']}, {counts['completed']} completed, {counts['failed']} failed "
               f"of {counts['total']}")
    for error in (found.get("errors") or {}).get("data") or []:
        click.echo(f"  line {error.get('line')}: {error.get('message')}")


def _follow(api: Api, batch_id: str) -> None:
    """Redraw the progress line until the batch ends, then its summary."""
    started, first_done = time.monotonic(), None
    while True:
        found = api.call("GET", f"/v1/batches/{batch_id}")
        counts = found["request_counts"]
        done = counts["completed"] + counts["failed"]
        if first_done is None:
            first_done = done
        rate = (done - first_done) / max(time.monotonic() - started, 1e-9)
        click.echo(f"\r{progress_line(found['status'], counts, rate)}", nl=False, err=True)
        if found["status"] in ENDED:
            click.echo("", err=True)
            _summary(found)
            if found["status"] != "completed":
                sys.exit(1)
            return
        time.sleep(POLL)


def progress_line(status: str, counts: dict[str, int], rate: float) -> str:
    total, done = counts["total"], counts["completed"] + counts["failed"]
    filled = BAR * done // total if total else 0
    left = (total - done) / rate if rate > 0 else None
    eta = f"{left:.0f}s" if left is not None else "?"
    return (f"[{'#' * filled}{'.' * (BAR - filled)}] {done}/{total} done, {counts['failed']} failed, "
            f"{rate:.1f}/s, ETA {eta} ({status})   ")
