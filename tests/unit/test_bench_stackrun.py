"""invoke bench, stackrun: the pure parts; nothing runs."""
from dataclasses import dataclass
from pathlib import Path

from fedops import federation
from fedops.bench import bare, stackrun


@dataclass
class N:
    status: str
    name: str = ""


def test_flwr_run_and_run_config():
    cfg = federation.run_config(3)
    assert cfg == "num-server-rounds=3"
    assert federation.run_config(1, {"min-nodes": 6}) == "num-server-rounds=1 min-nodes=6"
    assert federation.run_config(1, {"name": "x", "on": True}) == 'num-server-rounds=1 name="x" on=true'
    argv = bare.flwr_run_argv(Path("/a/digits"), "bench", cfg)
    assert argv == ["flwr", "run", "/a/digits", "bench", "--run-config", "num-server-rounds=3",
                    "--format", "json"]


def test_count_online_tells_organisations_from_other_nodes():
    nodes = [N("online", "alpha"), N("offline", "bravo"), N("online", "charlie"), N("online", "bench-x-0")]
    assert stackrun.count_online(nodes, {"alpha", "bravo", "charlie"}) == (2, 3)
    assert stackrun.count_online([N("online"), N("online"), N("offline")], {"alpha"}) == (2, 2)   # names unknown


def test_online_organisations_keep_federation_order():
    nodes = [N("online", "charlie"), N("offline", "alpha"), N("online", "bravo"), N("online", "bench-x-0")]
    assert stackrun.online_organisations(nodes, ["alpha", "bravo", "charlie"]) == ["bravo", "charlie"]
    assert stackrun.online_organisations([N("online"), N("online")], ["alpha", "bravo", "charlie"]) == ["alpha", "bravo"]


def test_replies_and_failures_are_counted_from_the_log():
    stats = {}
    on_line = stackrun.show_progress("t", stats)
    for line in ("\x1b[92mINFO \x1b[0m:      aggregate_train: Received 3 results and 0 failures",
                 "INFO :      aggregate_evaluate: Received 2 results and 1 failures",
                 "INFO :      [ROUND 2/3]"):
        on_line(line)
    marks = stats.pop("round_marks")
    assert stats == {"failures": 1, "min_replies": 2}
    assert len(marks) == 1              # when the round's header line arrived


def test_a_round_begins_at_its_header_line_and_the_run_ends_at_the_accuracies():
    stats = {}
    on_line = stackrun.show_progress("t", stats)
    for line in ("INFO :      [ROUND 1/3]", "INFO :      [ROUND 1] centralised evaluation: accuracy=0.8",
                 "INFO :      [ROUND 2/3]", "INFO :      Accuracy by round (0 = initial model): 0.1, 0.8"):
        on_line(line)
    assert len(stats["round_marks"]) == 2 and stats["end_mark"] >= stats["round_marks"][-1]
