"""The LiteLLM proxy as a benchmark target, for a side-by-side table.

It runs ``litellm`` (the proxy of ``litellm[proxy]``, one worker, no
database) in front of the same fake upstream as the gateway, with a master
key so each request is authenticated as the gateway's are. LiteLLM is not a
dependency of the gateway: on first use it is installed from the package
index into a virtual environment of its own (``loadtests/.litellm-venv``,
never committed), which later runs reuse. If it cannot be installed the
target fails with the reason, and the other targets still run.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from loadtests.load import Target
from loadtests.targets import MODEL, Running, background, clean_environ, free_port, wait_healthy

VENV = Path(__file__).parent / ".litellm-venv"
REQUIREMENT = "litellm[proxy]"
INSTALL_TIMEOUT = 1200.0
READY_TIMEOUT = 180.0  # its imports alone take a while on a busy machine


def installed(venv: Path, log: Path) -> Path:
    """The ``litellm`` command of ``venv``, installing it there first if need be."""
    command = venv / "bin" / "litellm"
    if command.exists():
        return command
    print(f"  installing {REQUIREMENT} into {venv} (once; a few minutes)", flush=True)
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", REQUIREMENT]]
    with log.open("a") as output:
        for step in steps:
            output.write(f"$ {' '.join(step)}\n")
            output.flush()
            try:
                completed = subprocess.run(step, stdout=output, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT,
                                           check=False)
            except (OSError, subprocess.TimeoutExpired) as error:
                raise RuntimeError(f"cannot install {REQUIREMENT}: {error}; see {log}") from error
            if completed.returncode != 0:
                raise RuntimeError(f"cannot install {REQUIREMENT} from the package index (`{' '.join(step)}` "
                                   f"exited {completed.returncode}); see {log}")
    if not command.exists():
        raise RuntimeError(f"{REQUIREMENT} installed no `litellm` command in {venv}; see {log}")
    return command


@contextmanager
def litellm(upstream_port: int, workdir: Path, logs: Path, venv: Path = VENV) -> Iterator[Running]:
    """The LiteLLM proxy, one worker, serving ``fake-small`` from the fake upstream."""
    command = installed(venv, logs / "litellm-install.log")
    master_key = f"sk-bench-{secrets.token_hex(8)}"
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: fake\n"
        "general_settings:\n"
        f"  master_key: {master_key}\n"
    )
    env = clean_environ({
        # The price map shipped in the package, not fetched at start; no admin UI; quiet logs.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "DISABLE_ADMIN_UI": "True",
        "LITELLM_LOG": "ERROR",
    })
    port = free_port()
    argv = [str(command), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    with background("litellm", argv, env, logs) as process:
        wait_healthy(f"http://127.0.0.1:{port}", [process], logs, path="/health/liveliness",
                     timeout=READY_TIMEOUT)
        yield Running(Target("litellm", f"http://127.0.0.1:{port}", MODEL, master_key, billed=False),
                      {"litellm": process.pid})
