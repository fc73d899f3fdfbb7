"""The sample app's ServerApp waits for replies with a short poll (apps/digits)."""
import sys
from types import SimpleNamespace

from fedops import paths

sys.path.insert(0, str(paths.APPS_DIR / "digits"))
from digits.server_app import PollingGrid  # noqa: E402


class Replies:
    """A grid whose replies arrive over several pulls (what a SuperLink does)."""

    def __init__(self, waves):
        self.waves, self.pulls = list(waves), 0

    def push_messages(self, messages):
        return [f"m{i}" for i, _ in enumerate(messages)]

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
