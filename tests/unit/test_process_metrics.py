"""syncd_process_*: prometheus_client's six series, also where /proc/stat cannot be read (the
unit's ProcSubset=pid; the systemd lane checks it under the real unit)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from syncd.observe.process import ProcessMetrics, boot_time


def series(registry: CollectorRegistry) -> dict[str, float]:
    lines = generate_latest(registry).decode().splitlines()
    return {
        line.split()[0]: float(line.split()[1])
        for line in lines
        if line.startswith("syncd_process_")
    }


def test_the_same_series_as_prometheus_client_s_collector():
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    ours.register(ProcessMetrics("syncd"))
    ProcessCollector(namespace="syncd", registry=theirs)
    a, b = series(ours), series(theirs)
    assert (
        set(a)
        == set(b)
        == {
            "syncd_process_virtual_memory_bytes",
            "syncd_process_resident_memory_bytes",
            "syncd_process_start_time_seconds",
            "syncd_process_cpu_seconds_total",
            "syncd_process_open_fds",
            "syncd_process_max_fds",
        }
    )
    assert a["syncd_process_start_time_seconds"] == b["syncd_process_start_time_seconds"]
    assert a["syncd_process_max_fds"] == b["syncd_process_max_fds"]


def test_without_proc_stat_the_boot_time_comes_from_the_clock(tmp_path):
    """A /proc with only the process's own directory, as ProcSubset=pid leaves it."""
    (tmp_path / "self").symlink_to(Path("/proc/self"))
    assert not (tmp_path / "stat").exists()
    derived = boot_time(tmp_path)
    assert derived == int(derived)  # whole seconds, as /proc/stat has it: stable across scrapes
    assert abs(derived - boot_time()) <= 1
    registry = CollectorRegistry()
    collector = ProcessMetrics("syncd", proc=tmp_path)
    registry.register(collector)
    first = series(registry)
    assert first["syncd_process_resident_memory_bytes"] > 0
    assert first["syncd_process_open_fds"] > 0
    assert (
        series(registry)["syncd_process_start_time_seconds"]
        == (first["syncd_process_start_time_seconds"])
    )
    # prometheus_client's collector, given the same /proc, exports nothing: the bug it fixes
    theirs = CollectorRegistry()
    ProcessCollector(namespace="syncd", proc=str(tmp_path), registry=theirs)
    assert series(theirs) == {}
