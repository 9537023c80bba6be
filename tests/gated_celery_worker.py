"""The Celery app the test workers run: `nst_jobs.celery_app` itself, its job function held at a test's gate.

`celery -A gated_celery_worker worker` (tests/ on PYTHONPATH, NST_TEST_GATE naming the gate folder) is the worker
`nst-worker` starts, same app, settings and task, except that the task's call of `perform` goes through
`gates.GatedWork` (the app's `work`), so a test can hold a job mid-run (tests/gates.py).
"""

from __future__ import annotations

from gates import GatedWork

import nst_jobs.celery_app as celery_app

app = celery_app.app_from_env(work=GatedWork.from_env())
