"""Chaos for the job path: worker processes of a model's two candidate
providers are SIGKILLed and restarted, again and again, under a steady
streaming load; a third of the requests fail on the first candidate and are
handed to the second. Every request ends with a complete answer or a clear
error; no job runs to completion twice upstream, and every complete answer
came from exactly one upstream run; every job settles once, completed jobs
are charged, interrupted ones (whose clients got an error) are not, unless
their deadline cut them after output had reached the client (charged for
that output, as any stream cut short is), and the ledger reconciles. The
figures are printed for the record (``pytest -s``)."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from loadtests.fake_upstream import FakeUpstream
from tests.support.cluster import Cluster, running_cluster
from tests.support.processes import gatewayz
from tests.support.servers import ServerThread

REQUESTS, CONCURRENCY = 90, 12
GRANT = 1_000_000  # micro-credits: the cluster's key has 1 credit
KILLS = 6
DEADLINE = 20  # seconds: GATEWAYZ_REQUEST_TIMEOUT


@dataclass(frozen=True)
class Answer:
    prompt: str
    job_id: str | None
    status: int | None
    outcome: str  # "complete" | "error"
    seconds: float
    error_code: str | None = None  # the error event's code, for a stream that ended with one
    produced: bool = False  # content reached the client before the stream ended

    @property
    def cut_after_output(self) -> bool:
        """A stream its deadline (or idle timeout) ended after some output:
        charged for what it delivered, like any stream cut short."""
        return self.outcome == "error" and self.error_code == "timeout" and self.produced


@pytest.fixture
def candidates() -> Iterator[tuple[FakeUpstream, FakeUpstream, str]]:
    one, two = FakeUpstream(name="one"), FakeUpstream(name="two")
    with ExitStack() as stack:
        first = stack.enter_context(ServerThread(one.app, name="upstream one"))
        second = stack.enter_context(ServerThread(two.app, name="upstream two"))
        config = (
            f'[providers.one]\nadapter = "openai"\nbase_url = "{first.url}/v1"\nmodels = ["duo"]\n\n'
            f'[providers.two]\nadapter = "openai"\nbase_url = "{second.url}/v1"\nmodels = ["duo"]\n\n'
            '[models.duo]\nproviders = ["one", "two"]\ninput_price_per_mtok = 1.00\noutput_price_per_mtok = 2.00\n'
        )
        yield one, two, config


def prompt(n: int) -> str:
    """Unique per request (the upstream counts completions by it); every
    third fails on the first candidate and is handed to the second."""
    command = "fail:503@one slow" if n % 3 == 0 else "slow"
    return f"{command} req{n} one two three four five six"


async def stream(client: httpx.AsyncClient, text: str) -> Answer:
    body = {"model": "duo", "stream": True, "messages": [{"role": "user", "content": text}]}
    began = time.monotonic()
    try:
        async with client.stream("POST", "/chat/completions", json=body) as response:
            job_id = response.headers.get("x-gatewayz-job-id")
            if response.status_code != 200:
                error = (await response.aread()).decode()
                assert '"error"' in error, f"an error without an error body: {error}"
                return Answer(text, job_id, response.status_code, "error", time.monotonic() - began)
            lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    except httpx.HTTPError as error:
        raise AssertionError(f"the gateway broke the connection instead of answering: {error!r}") from None
    seconds = time.monotonic() - began
    if lines and lines[-1] == "data: [DONE]":
        assert said(lines[:-1]) == f"Echo: {text}", f"a stream that ended with [DONE] but was not the whole " \
                                                    f"answer: {said(lines[:-1])!r}"
        return Answer(text, job_id, 200, "complete", seconds)
    assert lines and '"error"' in lines[-1], f"a stream that ended without [DONE] nor an error: {lines[-3:]}"
    return Answer(text, job_id, 200, "error", seconds, error_code=orjson.loads(lines[-1][6:])["error"].get("code"),
                  produced=bool(said(lines[:-1])))


def said(lines: list[str]) -> str:
    """The content of a stream's chunks."""
    return "".join(chunk["choices"][0]["delta"].get("content") or ""
                   for chunk in (orjson.loads(line[6:]) for line in lines) if chunk.get("choices"))


async def load(cluster: Cluster, answers: list[Answer]) -> None:
    slots = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=60,
                                 headers={"authorization": f"Bearer {cluster.key}"}) as client:
        async def one(n: int) -> None:
            async with slots:
                answers.append(await stream(client, prompt(n)))
                await asyncio.sleep(0.05)  # a steady load, not one burst

        await asyncio.gather(*(one(n) for n in range(REQUESTS)))


def test_kill_and_restart_workers_of_both_candidates_under_load(
        tmp_path: Path, candidates: tuple[FakeUpstream, FakeUpstream, str]) -> None:
    one, two, config = candidates
    answers: list[Answer] = []
    with running_cluster(tmp_path, "", config=config, providers=("one", "two"), GATEWAYZ_LOG_LEVEL="warning",
                         GATEWAYZ_REQUEST_TIMEOUT=str(DEADLINE), GATEWAYZ_STREAM_IDLE_TIMEOUT="10",
                         GATEWAYZ_UPSTREAM_RETRIES="0") as cluster:
        cluster.start("billing", "billing")
        workers: dict[str, subprocess.Popen[bytes]] = {}
        for name in ("one-0", "one-1", "two-0", "two-1"):
            workers[name] = cluster.worker(name, provider=name.partition("-")[0])
        cluster.wait_for_workers(2, provider="one")
        cluster.wait_for_workers(2, provider="two")

        runner = threading.Thread(target=lambda: asyncio.run(load(cluster, answers)))
        runner.start()
        chooser = random.Random(7)
        for kill in range(KILLS):
            time.sleep(0.9)
            provider = ("one", "two")[kill % 2]
            victim = chooser.choice(sorted(name for name in workers if name.startswith(provider)))
            workers.pop(victim).send_signal(signal.SIGKILL)  # mid-stream: its jobs are redelivered
            replacement = f"{provider}-{kill + 2}"
            workers[replacement] = cluster.worker(replacement, provider=provider)
        runner.join(timeout=120)
        assert not runner.is_alive(), "the load did not finish: some request hung"

        open_holds = cluster.wait_until_settled(timeout=30)
        records = {row["job_id"]: row for row in cluster.query("SELECT * FROM usage_records")}
        charges = cluster.query("SELECT reference, count(*) AS n FROM ledger_transactions "
                                "WHERE kind = 'charge' GROUP BY reference")
        balance = httpx.get(f"{cluster.url}/user/balance", headers={"authorization": f"Bearer {cluster.key}"}).json()
        reconciled = gatewayz("billing", "reconcile", env=cluster.env, cwd=tmp_path)

    completed = [answer for answer in answers if answer.outcome == "complete"]
    failed = [answer for answer in answers if answer.outcome == "error"]
    upstream_runs = Counter(one.completed + two.completed)
    handed = sum(1 for answer in completed if answer.prompt.startswith("fail:"))
    charged = {job for job, record in records.items() if record["cost"] > 0}
    charged_errors = [a for a in failed if a.job_id in charged and not a.cut_after_output]
    print(f"\nworker kills: {len(answers)} requests, {len(completed)} completed ({handed} after a hand-off), "
          f"{len(failed)} ended with an error (statuses {dict(Counter(a.status for a in failed))}, "
          f"slowest {max((a.seconds for a in failed), default=0):.1f}s); {KILLS} workers SIGKILLed and replaced; "
          f"{sum(upstream_runs.values())} upstream completions; {len(records)} settled, {len(charged)} charged "
          f"({sum(1 for a in failed if a.job_id in charged)} of them errors to the client, "
          f"{sum(1 for a in failed if a.cut_after_output)} streams cut by their deadline after output), "
          f"{sum(r['cost'] for r in records.values())} micro-credits")

    assert len(answers) == REQUESTS
    assert completed and failed, "the kills should interrupt some jobs, not all"
    assert handed, "no handed-off job completed"
    assert all(answer.seconds < DEADLINE + 5 for answer in answers), "a request outlived its deadline"
    assert max(upstream_runs.values()) == 1, f"a job ran to completion twice: {upstream_runs.most_common(3)}"
    assert all(upstream_runs[answer.prompt] == 1 for answer in completed), "an answer no upstream finished"
    assert all(answer.job_id for answer in answers if answer.status == 200)
    assert open_holds == 0, "holds left open"
    assert len(records) == REQUESTS, "a job was never settled"
    assert all(charge["n"] == 1 for charge in charges), "a job was charged twice"
    assert all(answer.job_id in charged for answer in completed), "a completed job was not charged"
    assert len(charged) <= sum(upstream_runs.values()), "a job no upstream finished was charged"
    assert not charged_errors, f"{len(charged_errors)} jobs were charged though their clients got an error"
    assert balance["available_micros"] == GRANT - sum(record["cost"] for record in records.values())
    assert balance["held_micros"] == 0
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
