"""`syncd_process_*`: memory, CPU, open files and start time, also under the unit's
ProcSubset=pid.

prometheus_client's process collector reads the boot time from /proc/stat, which ProcSubset=pid
hides; without it the collector exports nothing at all, and the restart alert
(`changes(syncd_process_start_time_seconds[1h])`) and the memory panel go blind. Everything
else it reads is under /proc/self, which stays. So these are the same six series, with the boot
time from /proc/stat where it can be read, else from CLOCK_BOOTTIME, taken once: a start time
that moved by a microsecond between scrapes would count as a restart.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


def boot_time(proc: Path = Path("/proc")) -> float:
    try:
        for line in (proc / "stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return float(round(time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)))


class ProcessMetrics(Collector):
    def __init__(self, namespace: str = "syncd", proc: Path = Path("/proc")) -> None:
        self.prefix = f"{namespace}_process_"
        self.proc = proc
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.pagesize = resource.getpagesize()
        self.btime = boot_time(proc)

    def collect(self) -> Iterator[Metric]:
        try:
            stat = (self.proc / "self" / "stat").read_text()
        except OSError:  # no /proc at all (not Linux): nothing to say
            return
        # after the command name, which may hold spaces and parentheses
        fields = stat.rpartition(")")[2].split()
        utime, stime = int(fields[11]), int(fields[12])
        started, vsize, rss = int(fields[19]), int(fields[20]), int(fields[21])
        p = self.prefix
        yield GaugeMetricFamily(
            f"{p}virtual_memory_bytes", "Virtual memory size in bytes.", value=vsize
        )
        yield GaugeMetricFamily(
            f"{p}resident_memory_bytes",
            "Resident memory size in bytes.",
            value=rss * self.pagesize,
        )
        yield GaugeMetricFamily(
            f"{p}start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            value=started / self.ticks + self.btime,
        )
        yield CounterMetricFamily(
            f"{p}cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            value=(utime + stime) / self.ticks,
        )
        try:
            yield GaugeMetricFamily(
                f"{p}open_fds",
                "Number of open file descriptors.",
                value=len(os.listdir(self.proc / "self" / "fd")),
            )
        except OSError:
            pass
        yield GaugeMetricFamily(
            f"{p}max_fds",
            "Maximum number of open file descriptors.",
            value=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )
