"""The `proxies` fixture: fault proxies in front of clusters, for the fault tests of both lanes
(scenarios and acceptance); registered for every test by tests/conftest.py (`pytest_plugins`)."""

from __future__ import annotations

import pytest

from tests.support.faultproxy import FaultProxy


@pytest.fixture
async def proxies():
    """proxies(cluster) -> a started FaultProxy in front of it, stopped after the test."""
    started: list[FaultProxy] = []

    async def start(cluster) -> FaultProxy:
        proxy = await FaultProxy(cluster.host, cluster.port).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        await proxy.stop()
