"""Where a process's metrics live, and labelled series bound once.

A role's metric families (``ingress.metrics``, ``workers.metrics``,
``billing.metrics``) are registered on the ``MetricsRegistry`` its runtime
builds, never on prometheus_client's global registry: a test process runs
many gateways, and each must count only its own requests.

``gatewayz ingress --workers N`` runs N processes behind one port, and a
scrape reaches whichever the kernel picks: there the families write
prometheus_client's memory-mapped files in one directory (its multiprocess
mode), and every process's ``/metrics`` reads them all, so the totals are
the whole ingress's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, values
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

M = TypeVar("M", bound=MetricWrapperBase)


class MetricsRegistry:
    """``families``: where a role's families register (None in multiprocess
    mode: their values go to the shared files); ``exposed``: what
    ``/metrics`` serves."""

    def __init__(self, *, multiprocess_dir: Path | None = None) -> None:
        self.exposed = CollectorRegistry(auto_describe=True)
        self.families: CollectorRegistry | None = self.exposed
        if multiprocess_dir is not None:
            # prometheus_client reads the directory from the environment when
            # a value opens its file, and picks its value class at import:
            # both are set here, in the process that counts, before any family exists.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(multiprocess_dir)
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
            MultiProcessCollector(self.exposed, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
            self.families = None

    def add(self, collector: Collector) -> None:
        """A collector read at scrape time (gauges of what the process keeps)."""
        self.exposed.register(collector)


class Series(Generic[M]):
    """A family's children by label values, each bound once: ``labels()``
    builds a key and takes a lock on every call, more than the increment."""

    __slots__ = ("_family", "_children")

    def __init__(self, family: M) -> None:
        self._family = family
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *labels: str) -> M:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._family.labels(*labels)
        return child
