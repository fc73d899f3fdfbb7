"""The sample app's ServerApp waits for replies with a short poll (apps/digits)."""
import sys
from types import SimpleNamespace

from fedops import paths

sys.path.insert(0, str(paths.APPS_DIR / "digits"))
from digits.server_app import PollingGrid  # noqa: E402


class Replies:
    """A grid whose replies arrive over several pulls (what a SuperLink does)."""

    def __init__(self, waves):
        self.waves, self.pulls, self.pushed = list(waves), 0, []

    def push_messages(self, messages):
        ids = [f"m{sum(map(len, self.pushed)) + i}" for i, _ in enumerate(messages)]
        self.pushed.append(ids)
        return ids

    def pull_messages(self, ids):
        self.pulls += 1
        wave = self.waves.pop(0) if self.waves else []
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in wave if i in ids]


def test_every_reply_is_collected_across_pulls():
    grid = Replies([[], ["m1"], [], ["m0", "m2"]])
    replies = PollingGrid(grid, 0.001).send_and_receive([object()] * 3)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    assert grid.pulls == 4


def test_a_timeout_returns_what_arrived():
    grid = Replies([["m0"]])
    replies = PollingGrid(grid, 0.01).send_and_receive([object()] * 2, timeout=0.05)
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]


class Answering:
    """A grid where every pushed message is answered at the next pull; records how
    many messages were outstanding at the most."""

    def __init__(self):
        self.outstanding, self.most, self.count = set(), 0, 0

    def push_messages(self, messages):
        ids = [f"m{self.count + i}" for i, _ in enumerate(messages)]
        self.count += len(ids)
        self.outstanding |= set(ids)
        self.most = max(self.most, len(self.outstanding))
        return ids

    def pull_messages(self, ids):
        got = [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in ids]
        self.outstanding -= set(ids)
        return got


def test_waves_bound_how_many_nodes_work_at_once():
    grid = Answering()
    replies = PollingGrid(grid, 0.001, wave=4).send_and_receive([object()] * 10)
    assert len(replies) == 10 and grid.most == 4
    grid = Answering()
    PollingGrid(grid, 0.001).send_and_receive([object()] * 10)
    assert grid.most == 10                       # no waves: all at once, as flwr does


def test_a_timeout_covers_every_message():
    grid = Replies([["m0"], [], [], [], [], [], [], [], [], []])
    replies = PollingGrid(grid, 0.01, wave=1).send_and_receive([object()] * 3, timeout=0.05)
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]
    assert len(grid.pushed) == 2                 # the third message was never sent


def test_each_reply_lets_the_next_message_go_without_waiting_for_the_slowest():
    # m0 is slow; m1's reply frees its place for m2, m2's for m3, while m0 still works
    grid = Replies([[], ["m1"], ["m2"], ["m3"], ["m0"]])
    replies = PollingGrid(grid, 0.001, wave=2).send_and_receive([object()] * 4)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2", "m3"]
    assert grid.pushed == [["m0", "m1"], ["m2"], ["m3"]]
    assert grid.pulls == 5
