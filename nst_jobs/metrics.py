"""Prometheus metrics of the job system, counted where the job table records each state change.

Why here: the table (`store.JobStore`) is the system of record whichever backend runs the jobs, so counting at its
transitions (`JobMetrics.job_changed`, the store's observer) counts the embedded executor's jobs and Celery's the
same way, in the process that owns the table (the bot). The queue and worker gauges are read when Prometheus scrapes
(`JobQueue.refresh_metrics`), not kept up to date on the side. Every metric lives in a registry the caller owns, so
two queues in one process (tests) never share counts.

No label carries a user or a guild: `outcome` and `state` are the job states, `device` a configured device entry or
the CUDA device a job ran on; all are bounded.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from nst_jobs.models import TERMINAL_STATES, Job, JobState

__all__ = ["DURATION_BUCKETS", "QUEUE_STATE_LABELS", "WAIT_BUCKETS", "JobMetrics", "process_collectors",
           "worker_registry"]

#: Run time of a job, seconds: jobs take minutes, so the buckets reach 30 minutes (the default Celery time limit).
DURATION_BUCKETS = (5.0, 10.0, 30.0, 60.0, 120.0, 180.0, 300.0, 450.0, 600.0, 900.0, 1200.0, 1800.0)
#: Time in line before a job starts, seconds: from at once to an hour behind a long queue.
WAIT_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)
#: `nst_queue_jobs{state=...}`: the label of each active job state.
QUEUE_STATE_LABELS: Mapping[JobState, str] = {JobState.QUEUED: "waiting", JobState.RUNNING: "running"}


def _worker_up(registry: CollectorRegistry) -> Gauge:
    return Gauge("nst_worker_up", "Workers able to run jobs on each device (0: none; the bot's own workers, or "
                 "this nst-worker)", ["device"], registry=registry)


def process_collectors(registry: CollectorRegistry) -> None:
    """The process's own figures (CPU, memory, open files, GC, Python version) in `registry`."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


class JobMetrics:
    """The job metrics in `registry` (a new one when None); give it to `JobQueue(..., metrics=...)`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.submitted = Counter("nst_jobs_submitted", "Jobs accepted into the queue", registry=r)
        self.finished = Counter("nst_jobs_finished", "Jobs that ended, by outcome (done, failed, cancelled)",
                                ["outcome"], registry=r)
        for state in sorted(TERMINAL_STATES):
            self.finished.labels(state.value)  # every outcome shows up at 0, so rate() works from the start
        self.duration = Histogram("nst_job_duration_seconds", "Run time of jobs that finished done, from their "
                                  "start to their result", buckets=DURATION_BUCKETS, registry=r)
        self.wait = Histogram("nst_queue_wait_seconds", "Time from a job's submission to its first start",
                              buckets=WAIT_BUCKETS, registry=r)
        self.queue_jobs = Gauge("nst_queue_jobs", "Jobs waiting and running, read from the job table", ["state"],
                                registry=r)
        self.worker_up = _worker_up(r)
        self.gpu_peak = Gauge("nst_gpu_memory_peak_bytes", "Peak GPU memory of the last job done on each CUDA "
                              "device, as its result reports it", ["device"], registry=r)

    # -- JobObserver: the store's state changes ----------------------------------------------------------------------
    def job_changed(self, job: Job) -> None:
        if job.state == JobState.QUEUED and job.attempts == 0:
            self.submitted.inc()
        elif job.state == JobState.RUNNING and job.attempts == 1 and job.wait_seconds is not None:
            self.wait.observe(job.wait_seconds)  # a retried job's later starts are not time spent in line
        elif job.state in TERMINAL_STATES:
            self.finished.labels(job.state.value).inc()
            if job.state == JobState.DONE:
                self._observe_done(job)

    def _observe_done(self, job: Job) -> None:
        if job.run_seconds is not None:
            self.duration.observe(job.run_seconds)
        result = job.result or {}
        device, peak = str(result.get("device") or ""), result.get("peak_memory_bytes")
        if device.startswith("cuda") and isinstance(peak, int):
            self.gpu_peak.labels(device).set(peak)

    # -- at scrape time ------------------------------------------------------------------------------------------------
    def set_queue(self, counts: Mapping[JobState, int]) -> None:
        for state, label in QUEUE_STATE_LABELS.items():
            self.queue_jobs.labels(label).set(counts.get(state, 0))

    def set_workers(self, up: Mapping[str, int]) -> None:
        """`up`: device -> workers able to run jobs there (the backend's `workers_up`)."""
        self.worker_up.clear()
        for device, count in up.items():
            self.worker_up.labels(device).set(count)


def worker_registry(device: str) -> CollectorRegistry:
    """What `nst-worker --metrics-port` serves: its process figures and `nst_worker_up{device}` = 1 while it runs.
    (Its jobs are counted by the bot, which owns the job table.)"""
    registry = CollectorRegistry()
    process_collectors(registry)
    _worker_up(registry).labels(device).set(1)
    return registry
