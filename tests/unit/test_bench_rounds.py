"""fedops/bench/rounds.py: a round's steps from the SuperNodes' timestamped logs (lines
as `docker logs --timestamps` gives them for a flwr 1.42 SuperNode)."""
import pytest

from fedops.bench import rounds

# One SuperNode, two messages (train, evaluate), with the colour codes and blank lines
# flwr prints; the second message's ClientApp line is missing from a third one.
LOG = """\
2026-12-07T15:10:25.152572927Z \x1b[92mINFO \x1b[0m:      [RUN 68]
2026-12-07T15:10:25.152949780Z \x1b[92mINFO \x1b[0m:      Receiving: train message (ID: 49f3)
2026-12-07T15:10:25.626685771Z \x1b[92mINFO \x1b[0m:      Received successfully
2026-12-07T15:10:28.050741317Z \x1b[92mINFO \x1b[0m:      Start `flwr-clientapp` process
2026-12-07T15:10:28.248306292Z Successfully installed digits to /tmp/flwr/apps/flfed.digits.1.0.0.75642534.
2026-12-07T15:10:31.696538601Z \x1b[92mINFO \x1b[0m:      Sending: train message (ID: 6b6a)
2026-12-07T15:10:32.049273012Z \x1b[92mINFO \x1b[0m:      Sent successfully
2026-12-07T15:10:35.229721077Z \x1b[92mINFO \x1b[0m:      Receiving: evaluate message (ID: f7a6)
2026-12-07T15:10:35.546460624Z \x1b[92mINFO \x1b[0m:      Received successfully
2026-12-07T15:10:38.268699786Z \x1b[92mINFO \x1b[0m:      Start `flwr-clientapp` process
2026-12-07T15:10:41.703877503Z \x1b[92mINFO \x1b[0m:      Sent successfully
2026-12-07T15:10:44.778280037Z \x1b[92mINFO \x1b[0m:      Receiving: train message (ID: 7c05)
2026-12-07T15:10:45.014620676Z \x1b[92mINFO \x1b[0m:      Received successfully
2026-12-07T15:10:50.956285462Z \x1b[92mINFO \x1b[0m:      Sent successfully
"""


def test_each_message_gets_its_own_events_in_order():
    handled = rounds.parse("alpha", LOG)
    assert [h.complete() for h in handled] == [True, True, False]
    first = handled[0].times
    assert (first["received"] - first["pulled"]).total_seconds() == pytest.approx(0.473736)
    assert first["sent"].isoformat() == "2026-12-07T15:10:32.049273+00:00"


def test_the_steps_of_a_phase_and_the_wait_between_messages():
    s = rounds.steps(rounds.parse("alpha", LOG))
    assert s["pull"] == pytest.approx([0.473736, 0.316739])
    assert s["start"] == pytest.approx([2.424056, 2.722239])
    assert s["clientapp"] == pytest.approx([3.998532, 3.435178])
    # the wait is counted between complete messages only: 32.049 -> 35.229
    assert s["wait"] == pytest.approx([3.180448])


def test_an_incomplete_message_breaks_the_chain_of_waits():
    broken = LOG.replace("2026-12-07T15:10:38.268699786Z \x1b[92mINFO \x1b[0m:      Start `flwr-clientapp` process\n", "")
    s = rounds.steps(rounds.parse("alpha", broken))
    assert len(s["pull"]) == 1 and s["wait"] == []


def test_lines_without_a_timestamp_or_marker_are_ignored():
    assert rounds.parse("a", "Receiving: train message\nnot a line\n") == []
    assert rounds.timestamp("2026-12-07T15:10:25Z x") is not None
    assert rounds.timestamp("garbage") is None


def test_a_profile_over_several_supernodes_and_its_report():
    p = rounds.profile("68", {"alpha": LOG, "bravo": LOG}, [20.0, 19.5])
    assert p.messages == 4 and len(p.steps["pull"]) == 4 and len(p.steps["wait"]) == 2
    text = "\n".join(rounds.render(p))
    assert "## A round, measured" in text and "stack run 68 (4 messages; rounds of 20.0, 19.5 s" in text
    assert "| wait:" in text and "3.18 | 3.18 | 3.18 |" in text
    assert "Not measured" in "\n".join(rounds.render(None))


def test_round_times_from_when_the_round_lines_arrived():
    assert rounds.round_times([10.0, 30.0, 49.0], 68.0) == [20.0, 19.0, 19.0]
    assert rounds.round_times([10.0, 30.0], None) == [20.0]
    assert rounds.round_times([], 5.0) == []


def test_a_clientapp_that_starts_before_the_receipt_is_logged_has_no_start_step():
    """The warm launcher forks a ClientApp at once; the SuperNode logs `Received
    successfully` only after confirming the receipt with the SuperLink."""
    flipped = """\
2026-12-07T22:52:01.100000000Z INFO :      Receiving: train message (ID: 1)
2026-12-07T22:52:01.300000000Z INFO :      Start `flwr-clientapp` process
2026-12-07T22:52:01.400000000Z INFO :      Received successfully
2026-12-07T22:52:02.000000000Z INFO :      Sent successfully
"""
    s = rounds.steps(rounds.parse("alpha", flipped))
    assert s["pull"] == pytest.approx([0.3]) and s["start"] == [0.0]
    assert s["clientapp"] == pytest.approx([0.6])
    assert sum(v[0] for v in (s["pull"], s["start"], s["clientapp"])) == pytest.approx(0.9)
