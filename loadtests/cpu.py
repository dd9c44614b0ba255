"""Where the CPU goes: CPU time per process over one benchmark level.

On a small machine the load generator, the gateway's processes, the fake
upstream and the services all share the same cores, so throughput figures
mean little without knowing who spent the CPU. ``CpuMeter`` reads (never
touches) the CPU times of named processes and, where asked, of their
children, so a PostgreSQL server's per-connection backends count towards it
(a child that exits between two snapshots takes its time with it).
"""

from __future__ import annotations

from collections.abc import Mapping

import psutil

SERVICE_PORTS = {"rabbitmq": 5672, "redis": 6379, "postgres": 5432}


def listening_pids(ports: Mapping[str, int]) -> dict[str, int]:
    """The processes listening on loopback ``ports``, by name; missing ones are left out."""
    wanted = {port: name for name, port in ports.items()}
    found: dict[str, int] = {}
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return found
    for connection in connections:
        if connection.status == psutil.CONN_LISTEN and connection.laddr and connection.pid:
            name = wanted.get(connection.laddr.port)
            if name is not None:
                found.setdefault(name, connection.pid)
    return found


class CpuMeter:
    def __init__(self, pids: Mapping[str, int], *, with_children: frozenset[str] = frozenset()) -> None:
        self._with_children = with_children
        self._processes: dict[str, psutil.Process] = {}
        for name, pid in pids.items():
            try:
                self._processes[name] = psutil.Process(pid)
            except psutil.Error:
                continue

    def snapshot(self) -> dict[str, float]:
        """CPU seconds (user + system) spent so far, per name."""
        return {
            name: _cpu_seconds(process, name in self._with_children) for name, process in self._processes.items()
        }

    @staticmethod
    def spent(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
        return {name: round(max(after[name] - before[name], 0.0), 3) for name in after if name in before}


def _cpu_seconds(process: psutil.Process, with_children: bool) -> float:
    total = 0.0
    try:
        family = [process, *(process.children(recursive=True) if with_children else ())]
    except psutil.Error:
        return total
    for member in family:
        try:
            times = member.cpu_times()
        except psutil.Error:
            continue  # a child that just exited
        total += times.user + times.system
    return total
