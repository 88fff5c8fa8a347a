"""The scheduler fix keeps at most one pending re-evaluation (see prepost.scheduler)."""

import threading
import time

from prepost.scheduler import coalesce_reevaluation


class FakeScheduler:
    """What Snakemake's JobScheduler does: one timer per call, each releasing the semaphore."""

    def __init__(self):
        self._open_jobs = threading.Semaphore(0)

    def _schedule_reevalutation(self, delay):
        threading.Timer(delay, lambda: self._open_jobs.release()).start()


def _wakeups(cls, calls, delay=0.05):
    s = cls()
    for _ in range(calls):
        s._schedule_reevalutation(delay)
    time.sleep(delay + 0.5)
    n = 0
    while s._open_jobs.acquire(blocking=False):
        n += 1
    return s, n


def test_pending_wakeups_coalesce():
    class Patched(FakeScheduler):
        pass

    _, before = _wakeups(FakeScheduler, 5)
    assert before == 5  # one chain per call: what made the rounds multiply
    assert coalesce_reevaluation(Patched) and coalesce_reevaluation(Patched)  # idempotent
    s, after = _wakeups(Patched, 5)
    assert after == 1
    s._schedule_reevalutation(0.05)  # once fired, the next round arms a new one
    time.sleep(0.5)
    assert s._open_jobs.acquire(blocking=False)


def test_unknown_scheduler_is_left_alone():
    class Other:
        pass

    assert coalesce_reevaluation(Other) is False
    assert not hasattr(Other, "_schedule_reevalutation")


def test_snakemake_scheduler_has_the_method():
    from snakemake.scheduling.job_scheduler import JobScheduler

    assert coalesce_reevaluation(JobScheduler)
    assert getattr(JobScheduler._schedule_reevalutation, "_prepost_coalesced", False)
