"""The federation's rounds as metrics (services/fl-exporter): a run followed while it runs,
its rounds and per-round metrics in Prometheus afterwards, equal to what its own log
says; and the CRL's next update, the one the edge checks organisations against.

The exporter is asked from inside the Prometheus container (the monitoring network is
not published)."""
from __future__ import annotations

import time

import pytest
from cryptography import x509

from fedops import federation, paths, runlog

from stackenv import prometheus_query as query
from stackenv import wait_all_online

ROUNDS = 2


def exporter_metrics(stack) -> str:
    """The FL exporter's /metrics, as Prometheus scrapes it."""
    code = ("import sys,urllib.request;"
            "sys.stdout.write(urllib.request.urlopen('http://fl-exporter:9200/metrics', timeout=20).read().decode())")
    return stack.compose("exec", "-T", "prometheus", "python3", "-c", code).stdout


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the series `name{labels...}` (all of them, any order) in exposition text."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture(scope="module")
def followed_run(stack) -> dict:
    """A new run of the sample app, watched through the exporter while it runs: the
    rounds the exporter reported while the run was under way."""
    wait_all_online(stack)
    log_errors = sample(exporter_metrics(stack), "fl_exporter_errors_total", stage="log")
    run_id = str(federation.submit("digits", ROUNDS))
    seen = {}                               # round the exporter reported -> its run status then
    deadline = time.time() + 600
    while time.time() < deadline:
        text = exporter_metrics(stack)
        rnd = sample(text, "fl_run_round", run_id=run_id)
        running = sample(text, "fl_run_status", run_id=run_id, status="running")
        if rnd is not None:
            seen.setdefault(int(rnd), "running" if running else "other")
        if sample(text, "fl_run_status", run_id=run_id, status="finished:completed"):
            break
        time.sleep(2)
    row = federation.run_status(run_id)
    assert row["status"] == "finished:completed", f"run {run_id} did not complete: {row}"
    return {"run_id": run_id, "seen": seen, "log_errors": log_errors}


def test_a_running_runs_round_is_exported_while_it_runs(followed_run):
    seen = followed_run["seen"]
    assert any(r >= 1 and state == "running" for r, state in seen.items()), \
        f"the exporter never showed run {followed_run['run_id']} in a round while it ran: {seen}"


def test_the_runs_rounds_and_accuracy_per_round_are_in_prometheus(stack, followed_run):
    run_id = followed_run["run_id"]
    deadline = time.time() + 180            # two scrapes (every 30 s) and some
    while True:
        status = query(stack, f'fl_run_status{{run_id="{run_id}"}}')
        metrics = query(stack, f'fl_run_metric{{run_id="{run_id}"}}')
        rounds = query(stack, f'fl_run_round{{run_id="{run_id}"}}')
        done = [s for s in status if s["metric"]["status"] == "finished:completed"]
        if done and rounds and rounds[0]["value"][1] == str(ROUNDS) and len(metrics) >= 2 + 6 * ROUNDS:
            break
        assert time.time() < deadline, (f"run {run_id} in Prometheus: status {status}, rounds {rounds}, "
                                        f"{len(metrics)} metric series")
        time.sleep(5)
    planned = query(stack, f'fl_run_rounds_planned{{run_id="{run_id}"}}')
    assert planned[0]["value"][1] == str(ROUNDS)
    got = {(m["metric"]["round"], m["metric"]["phase"], m["metric"]["name"]): float(m["value"][1]) for m in metrics}
    accuracy = [got[(str(r), "server_evaluate", "accuracy")] for r in range(ROUNDS + 1)]
    print(f"\nrun {run_id}: accuracy by round (0 = initial model) {accuracy}")
    assert accuracy[0] < 0.2 < 0.5 < accuracy[-1] <= 1.0        # 10 classes: chance is 0.1
    for r in range(1, ROUNDS + 1):
        assert {(p, n) for (rr, p, n) in got if rr == str(r)} == {
            ("train", "train_loss"), ("train", "train_accuracy"), ("evaluate", "eval_loss"),
            ("evaluate", "eval_accuracy"), ("server_evaluate", "accuracy"), ("server_evaluate", "loss")}
    # the same numbers as the run's own log (read by the admin inside the SuperLink)
    parsed = runlog.RunLog()
    parsed.feed(federation.admin(["log", run_id, federation.ADMIN_CONNECTION], timeout=60).stdout)
    parsed.close()
    from_log = {(str(r), p, n): v for r, phases in parsed.metrics.items() for p, vs in phases.items()
                for n, v in vs.items()}
    assert from_log == pytest.approx(got, rel=1e-12)
    errors = sample(exporter_metrics(stack), "fl_exporter_errors_total", stage="log")
    assert errors == followed_run["log_errors"], "the exporter failed reading a run's log"


def test_the_crls_next_update_is_exported_and_in_the_future(stack):
    deadline = time.time() + 120            # a scrape (every 30 s) after the CRL last changed
    while True:
        crl = x509.load_pem_x509_crl((paths.DEPLOY_DIR / "nginx" / "crl.pem").read_bytes())   # the edge's
        found = query(stack, "fl_crl_next_update_timestamp_seconds")
        revoked = query(stack, "fl_crl_revoked_certificates")
        if (len(found) == 1 and float(found[0]["value"][1]) == crl.next_update_utc.timestamp()
                and float(revoked[0]["value"][1]) == len(crl)):
            break
        assert time.time() < deadline, (f"Prometheus has {found} (revoked {revoked}); the edge's CRL: "
                                        f"next update {crl.next_update_utc}, {len(crl)} revoked")
        time.sleep(5)
    assert float(found[0]["value"][1]) - time.time() > 7 * 86400
    firing = query(stack, 'ALERTS{alertname="CRLExpiringSoon"}')
    assert firing == [], firing
