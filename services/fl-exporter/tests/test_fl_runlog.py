"""flexporter.runlog: the rounds and their metrics from a real run log of the sample app
(apps/digits, 3 rounds, 3 SuperNodes, flwr 1.42: digits-run.log, as the SuperLink
stored it), however the log arrives in pieces; and what it must not take for metrics."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(SERVICE))
from flexporter import runlog  # noqa: E402

LOG = (Path(__file__).parent / "digits-run.log").read_text()

EXPECTED = {
    0: {"server_evaluate": {"accuracy": 0.1, "loss": 2.302585092994046}},
    1: {"train": {"train_loss": 0.7456048628601706, "train_accuracy": 0.7899034892353378},
        "evaluate": {"eval_loss": 0.6140496241157638, "eval_accuracy": 0.8688888888888888},
        "server_evaluate": {"accuracy": 0.8688888888888889, "loss": 0.6140496241157637}},
    2: {"train": {"train_loss": 0.4640059133546893, "train_accuracy": 0.9294729027468447},
        "evaluate": {"eval_loss": 0.49037371986964273, "eval_accuracy": 0.891111111111111},
        "server_evaluate": {"accuracy": 0.8911111111111111, "loss": 0.4903737198696427}},
    3: {"train": {"train_loss": 0.34602055583064806, "train_accuracy": 0.9435783221974758},
        "evaluate": {"eval_loss": 0.3740716887538187, "eval_accuracy": 0.9244444444444444},
        "server_evaluate": {"accuracy": 0.9244444444444444, "loss": 0.3740716887538187}},
}


def test_every_round_and_its_aggregated_metrics_from_a_real_log():
    parsed = runlog.RunLog()
    events = parsed.feed(LOG) + parsed.close()
    assert parsed.metrics == EXPECTED            # the "Final results" summary adds nothing
    assert (parsed.round, parsed.rounds) == (3, 3)
    assert parsed.replies[2]["evaluate"] == runlog.Replies(3, 0)
    assert [e.round for e in events if e.kind == "round"] == [1, 2, 3]
    assert [(e.round, e.phase) for e in events if e.kind == "metrics"][:4] == [
        (0, "server_evaluate"), (1, "train"), (1, "evaluate"), (1, "server_evaluate")]


@pytest.mark.parametrize("size", [1, 7, 64, 1000])
def test_pieces_of_any_size_give_the_same_rounds(size):
    parsed = runlog.RunLog()
    for start in range(0, len(LOG), size):
        parsed.feed(LOG[start:start + size])
    parsed.close()
    assert parsed.metrics == EXPECTED and parsed.rounds == 3


def test_the_round_under_way_is_known_before_its_metrics():
    parsed = runlog.RunLog()
    head = LOG[:LOG.index("[ROUND 2/3]") + len("[ROUND 2/3]\n")]
    parsed.feed(head)
    assert (parsed.round, parsed.rounds) == (2, 3)
    assert sorted(parsed.metrics) == [0, 1]


def test_lines_that_are_not_the_strategys_records_are_not_metrics():
    parsed = runlog.RunLog()
    lines = [
        "INFO :      \t└──> MetricRecord: {'accuracy': 0.5}",                  # no global evaluation before it
        "INFO :      [ROUND 1/2]",
        "INFO :      aggregate_train: Received 2 results and 1 failures",
        "INFO :      \t└──> Aggregated MetricRecord: {'loss': 0.5, 'note': 'x', 'ok': True, 'n': nan}",
        "INFO :      Global evaluation",
        "INFO :      \t└──> MetricRecord: __import__('os').system('true')",    # never evaluated
        "INFO :      [ROUND 1] centralised evaluation: accuracy=0.8689 loss=0.6140",   # the app's own
        "INFO :      \t{ 1: {'train_loss': '7.4560e-01'}}",
    ]
    for line in lines:
        parsed.line(line)
    assert parsed.metrics == {1: {"train": {"loss": 0.5}}}       # strings, booleans, nan left out
    assert parsed.replies == {1: {"train": runlog.Replies(2, 1)}}


def test_record_reads_numbers_of_a_python_literal_only():
    assert runlog.record("{'a': 1, 'b': 2.5e-3, 'c': [1, 2], 'd': None}") == {"a": 1.0, "b": 0.0025}
    assert runlog.record("{'a': 1") == {} and runlog.record("[1, 2]") == {}
    assert runlog.strip_ansi("\x1b[92mINFO \x1b[0m:      x") == "INFO :      x"


def test_a_value_that_is_not_a_number_does_not_lose_the_others():
    assert runlog.record("{'loss': nan, 'accuracy': 0.5, 'delta': -0.25, 'big': inf}") == {
        "accuracy": 0.5, "delta": -0.25}
