"""The `nst-worker` command: one Celery worker for the `nst` queue.

    nst-worker --broker redis://HOST:6379/0 --device cuda:0

Run one nst-worker per GPU, each with its own `--device cuda:N` (and, on one machine, its own `--hostname`): a worker
runs one job at a time by default (`--concurrency 1`), because one optimisation fills a GPU. The device given here
wins over the job's `device` parameter. `--time-limit` must stay below `--visibility-timeout`, and every worker and
the bot must agree on the visibility timeout (the broker hands a job out again when it passes).

`--metrics-port N` serves Prometheus metrics of this worker process on http://0.0.0.0:N/metrics (`nst_worker_up`
and the process's CPU and memory; the jobs themselves are counted by the bot, which owns the job table).
`--log-format json` writes JSON lines instead of text, as the bot's `logging.format` does.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence

from nst_jobs.config import DEFAULT_TIME_LIMIT, DEFAULT_VISIBILITY_TIMEOUT, check_time_limit
from nst_jobs.log_format import LogFormat

__all__ = ["main"]

PROG = "nst-worker"
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Run a Celery worker that takes style-transfer jobs from the 'nst' queue. "
                               "Run one per GPU, each with its own --device cuda:N.")
    parser.add_argument("--broker", required=True, metavar="URL",
                        help="Redis URL of the broker and result backend, e.g. redis://HOST:6379/0")
    parser.add_argument("--device", default="auto",
                        help="device for every job of this worker: auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--concurrency", type=int, default=1, metavar="N",
                        help="jobs at once (worker processes); keep 1 per GPU (default: 1)")
    parser.add_argument("--time-limit", type=int, default=DEFAULT_TIME_LIMIT, metavar="S",
                        help=f"kill a job after S seconds (default: {DEFAULT_TIME_LIMIT})")
    parser.add_argument("--visibility-timeout", type=int, default=DEFAULT_VISIBILITY_TIMEOUT, metavar="S",
                        help="the broker hands an unfinished job to another worker after S seconds; must be above "
                             f"--time-limit and the same for every worker (default: {DEFAULT_VISIBILITY_TIMEOUT})")
    parser.add_argument("--hostname", default=None, metavar="NAME",
                        help="worker name, unique per worker (default: nst-DEVICE@%%h)")
    parser.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error", "critical"],
                        help="log level (default: info)")
    parser.add_argument("--log-format", default=LogFormat.TEXT.value, choices=[f.value for f in LogFormat],
                        help="log lines as text or as JSON lines (default: text)")
    parser.add_argument("--metrics-port", type=int, default=0, metavar="N",
                        help="serve Prometheus metrics of this worker on port N (default: 0, none)")
    parser.add_argument("--metrics-host", default="0.0.0.0", metavar="ADDR",
                        help="address the metrics port listens on (default: 0.0.0.0)")
    return parser


def _check(args: argparse.Namespace) -> None:
    if args.concurrency < 1:
        raise ValueError(f"--concurrency {args.concurrency} is not allowed; give 1 or more")
    if args.time_limit < 1:
        raise ValueError(f"--time-limit {args.time_limit} is not allowed; give a positive number of seconds")
    check_time_limit(args.time_limit, args.visibility_timeout, names=("--time-limit", "--visibility-timeout"))
    if not 0 <= args.metrics_port <= 65535:
        raise ValueError(f"--metrics-port {args.metrics_port} is not a port; give 1 to 65535, or 0 for none")


def main(argv: Sequence[str] | None = None) -> int:
    """Run `nst-worker`; returns the exit status (2: bad option or unreachable broker)."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        _check(args)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    from nst_jobs.celery_app import QUEUE, BrokerUnavailableError, make_celery, ping_broker

    try:
        ping_broker(args.broker)
    except BrokerUnavailableError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    # The worker processes read these (and `celery -A nst_jobs.celery_app` would build the same app from them).
    os.environ["NST_BROKER_URL"] = args.broker
    os.environ["NST_DEVICE"] = args.device
    os.environ["NST_TIME_LIMIT"] = str(args.time_limit)
    os.environ["NST_VISIBILITY_TIMEOUT"] = str(args.visibility_timeout)
    os.environ["NST_LOG_FORMAT"] = args.log_format
    if args.metrics_port:
        try:
            _serve_metrics(args.metrics_host, args.metrics_port, args.device)
        except OSError as exc:
            print(f"{PROG}: error: --metrics-port {args.metrics_port}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
    app = make_celery(args.broker, time_limit=args.time_limit, visibility_timeout=args.visibility_timeout)
    hostname = args.hostname or f"nst-{re.sub(r'[^A-Za-z0-9]+', '', args.device)}@%h"
    status = app.start(argv=[
        "worker", "--pool", "prefork", "--concurrency", str(args.concurrency), "-Q", QUEUE,
        "--prefetch-multiplier", "1", "-n", hostname, "-l", args.loglevel,
    ])  # what app.worker_main() does, but keeping the worker's exit status
    return status if isinstance(status, int) else 0


def _serve_metrics(host: str, port: int, device: str) -> None:
    """Serve this process's metrics from a thread of the worker's main process (before the pool forks)."""
    from prometheus_client import start_http_server

    from nst_jobs.metrics import worker_registry

    start_http_server(port, addr=host, registry=worker_registry(device))


if __name__ == "__main__":
    sys.exit(main())
