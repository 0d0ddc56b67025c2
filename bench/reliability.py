"""Writes RELIABILITY.md from the figures the fault tests left in test-artifacts/reliability/ (`make reliability`)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "test-artifacts" / "reliability"
SCENARIOS = [
    ("worker_killed", "A worker killed (SIGKILL) under load",
     "tests/reliability/test_faults.py::test_worker_killed_under_load",
     lambda f: f"{f['failed']} of {f['requests']} requests failed (bound: the {f['in_flight_bound']} that can be in "
               f"flight); the replacement was ready {f['ready_after_s']} s after the kill (model load "
               f"{f['model_load_s']} s; bound load + 5 s); {f['failed_after_ready']} failures after that."),
    ("sigterm", "SIGTERM under load (a rolling update)",
     "tests/reliability/test_faults.py::test_sigterm_under_load_finishes_what_was_accepted",
     lambda f: f"exit code {f['exit_code']} after {f['exit_after_s']} s (graceful timeout {f['graceful_timeout_s']} s); "
               f"a 5,000-row request accepted before the signal answered {f['slow_request_status']}; "
               f"{f['answered_after_signal']} answers completed after the signal; new connections refused: "
               f"{f['refused_after_exit']}."),
    ("reload", "Graceful reload (SIGHUP) under load",
     "tests/reliability/test_faults.py::test_graceful_reload_under_load_fails_nothing",
     lambda f: f"{f['failed']} of {f['requests']} requests failed across {f['reloads']} reloads; every worker "
               f"replaced: {f['workers_replaced']}."),
    ("recycling", "Worker recycling (max_requests with jitter)",
     "tests/reliability/test_faults.py::test_worker_recycling_over_5000_requests_fails_nothing",
     lambda f: f"{f['failed']} of {f['requests']} requests failed with max_requests {f['max_requests']} "
               f"(jitter {f['jitter']}); {f['workers_seen']} worker processes served them."),
    ("long_request", "A request longer than the timeout",
     "tests/reliability/test_faults.py::test_a_request_past_the_timeout_costs_only_itself",
     lambda f: f"a 100,000-row request took {f['long_request_s']} s against a {f['timeout_s']} s worker timeout "
               f"(outcome: {f['long_request_outcome']}); {f['other_failed']} of {f['other_requests']} other requests "
               f"failed; workers kept: {f['workers_kept']} of 2. gthread workers heartbeat from their main "
               f"thread, so a long request is not killed by the timeout."),
    ("sustained", "Sustained load",
     "tests/reliability/test_faults.py::test_sustained_load_has_no_errors_and_workers_hold_their_memory",
     lambda f: f"{f['seconds']} s at concurrency {f['concurrency']} (cache off): {f['requests']} requests, "
               f"{f['failed']} failed, {f['throughput']} req/s, p99 {f['p99_ms']} ms; worker memory "
               f"{f['rss_mib_before']} MiB after warm-up, {f['rss_mib_after']} MiB at the end "
               f"(largest growth {f['max_growth_pct']} %, bound 10 %)."),
]


def main() -> None:
    lines = ["# Reliability", "",
             f"Figures from `make reliability` on {time.strftime('%Y-%m-%d')}: each scenario is a test against a real "
             "2-worker gunicorn on 127.0.0.1, under a steady load of 8 keep-alive clients at 150 requests/s "
             "(`tests/support/loadgen.py`), on the 2-core reference machine. The tests assert the bounds; these are the "
             "figures of the latest run. Rerun one with `.venv/bin/python -m pytest <test>`.", "",
             "| Scenario | Test | Latest figures |", "|---|---|---|"]
    missing = []
    for key, title, test, describe in SCENARIOS:
        path = FIGURES / f"{key}.json"
        if not path.exists():
            missing.append(key)
            continue
        lines.append(f"| {title} | `{test}` | {describe(json.loads(path.read_text()))} |")
    lines += ["", "Also shown by the suite, without figures of their own:",
              "- A worker that cannot load its model at boot stays up and says why (`/health/ready` 503 with the "
              "reason, `/health/live` 200), and the master does not crash-loop: "
              "`tests/server/test_gunicorn.py::test_a_worker_that_cannot_load_stays_up_and_says_why`.",
              "- Redis killed under load: no failed prediction, caching resumes when it returns: "
              "`tests/state/test_shared_servers.py::test_redis_killed_under_load_fails_no_prediction_and_caching_resumes`.",
              "- A worker SIGKILLed under load leaves only whole lines in the prediction log: "
              "`tests/test_predictionlog.py::test_a_killed_worker_loses_no_answered_prediction_and_leaves_whole_lines`.",
              ""]
    if missing:
        sys.exit(f"no figures for {', '.join(missing)}: run the reliability tests first")
    (ROOT / "RELIABILITY.md").write_text("\n".join(lines))
    print("wrote RELIABILITY.md")


if __name__ == "__main__":
    main()
