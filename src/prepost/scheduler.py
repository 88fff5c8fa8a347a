"""A fix for Snakemake's scheduling loop, applied by the workflow when it starts.

Snakemake 9 ends every scheduling round with ``JobScheduler._schedule_reevalutation``: a
``threading.Timer`` that wakes the scheduler one rate-limiter timespan (1 s by default) later.
Each wake-up is a round, which arms a new timer; every job that finishes wakes the scheduler once
more and so starts another such chain. While jobs wait for cores, the chains live on, so after N
finished jobs the scheduler runs about N rounds per second (each re-checking the inputs and
parameters of every waiting job): on the 11-participant demo Snakemake's own process reached 50 %
of one core of a 2-core machine, and more the longer it ran. :func:`coalesce_reevaluation` keeps
at most one pending wake-up (a daemon thread, so it never delays the exit); rounds still follow
every job event and the rate limiter's timespan as before. No Snakemake option does this.
"""

from __future__ import annotations

import threading

__all__ = ["coalesce_reevaluation"]


def coalesce_reevaluation(scheduler_cls=None):
    """Make Snakemake's scheduler keep at most one pending re-evaluation timer.

    Parameters
    ----------
    scheduler_cls : type or None
        The class to patch (default: ``snakemake.scheduling.job_scheduler.JobScheduler``).

    Returns
    -------
    bool
        True when the class has the method this replaces (patched now or before); False when a
        Snakemake version without it is installed, which is left unchanged.
    """
    if scheduler_cls is None:
        try:
            from snakemake.scheduling.job_scheduler import JobScheduler as scheduler_cls
        except ImportError:
            return False
    original = getattr(scheduler_cls, "_schedule_reevalutation", None)
    if original is None:
        return False
    if getattr(original, "_prepost_coalesced", False):
        return True

    def _schedule_reevalutation(self, delay):
        lock = self.__dict__.setdefault("_prepost_reeval_lock", threading.Lock())
        with lock:
            if self.__dict__.get("_prepost_reeval_pending"):
                return
            self._prepost_reeval_pending = True

        def wake():
            with lock:
                self._prepost_reeval_pending = False
            self._open_jobs.release()

        timer = threading.Timer(delay, wake)
        timer.daemon = True
        timer.start()

    _schedule_reevalutation._prepost_coalesced = True
    scheduler_cls._schedule_reevalutation = _schedule_reevalutation
    return True
