"""The test suite's own DDS isolation: parallel workers of one run never share a domain."""

from __future__ import annotations

import pytest
from conftest import _test_domain_id


def test_each_worker_moves_to_its_own_domain_next_to_the_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROS_DOMAIN_ID", "42")
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert _test_domain_id() == "42"  # a serial run keeps the run's domain
    domains = []
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        domains.append(_test_domain_id())
    assert domains == ["42", "43", "44"]
    monkeypatch.setenv("ROS_DOMAIN_ID", "100")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    assert _test_domain_id() == "1"  # wraps inside 1..100
