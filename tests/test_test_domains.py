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


def test_a_domain_another_test_process_holds_is_passed_over(tmp_path) -> None:
    """Domain 100 is held (a lock taken through another open file, as another process would):
    the claim moves on, wrapping to 1; a released domain is claimed again."""
    import fcntl

    from conftest import _DOMAIN_LOCKS, _claim_domain

    held = open(tmp_path / "dyco_perception_test_domain_100.lock", "a")  # noqa: SIM115
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    claimed = len(_DOMAIN_LOCKS)
    try:
        assert _claim_domain("100", tmp_path) == "1"
        assert _claim_domain("100", tmp_path) == "2"  # 1 is now this process's own
        held.close()
        assert _claim_domain("100", tmp_path) == "100"
    finally:
        held.close()
        for lock in _DOMAIN_LOCKS[claimed:]:
            lock.close()
        del _DOMAIN_LOCKS[claimed:]
