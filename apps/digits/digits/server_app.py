"""ServerApp: FedAvg (flwr.serverapp.strategy.FedAvg, Message API) over the SuperNodes,
plus a centralised evaluation of the global model on the whole test set after every
round, so the accuracy per round is visible in the run's log."""
from __future__ import annotations

import time
from logging import INFO

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from digits import task


class PollingGrid(Grid):
    """The runtime's Grid, waiting for replies with a short poll: flwr 1.42's
    HttpGrid.send_and_receive sleeps a fixed 3 s between pulls, about 1.5 s lost per
    phase on average (docs/benchmarks.md, "Where a round's time goes"). With `wave`
    > 0 at most that many of a phase's messages are outstanding at a time: every
    message starts a ClientApp process, which flwr 1.42 fails unless it starts within
    30 s of being claimed, so SuperNodes sharing one machine's CPUs must not all start
    theirs at once. Each reply lets the next message go (a sliding window, not waves
    that wait for their slowest member). Everything else is the runtime's own Grid."""

    def __init__(self, grid: Grid, interval: float, wave: int = 0):
        self._grid, self._interval, self._wave = grid, interval, wave

    def set_run(self, run_id):
        self._grid.set_run(run_id)

    @property
    def run(self):
        return self._grid.run

    def create_message(self, *args, **kwargs):
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self):
        return self._grid.get_node_ids()

    def push_messages(self, messages):
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids):
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages, *, timeout=None):
        """Push (at most `wave` outstanding), then pull every `interval` until every
        reply is in or `timeout` (None: no limit, else for the whole call) has passed;
        the replies received, like the runtime's own."""
        waiting = list(messages)
        window = self._wave if self._wave > 0 else max(len(waiting), 1)
        end = None if timeout is None else time.monotonic() + timeout
        replies, pending = [], set()
        while (waiting or pending) and (end is None or time.monotonic() < end):
            if waiting and len(pending) < window:
                room = window - len(pending)
                pending.update(self._grid.push_messages(waiting[:room]))
                del waiting[:room]
            got = list(self._grid.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if pending and not got:
                time.sleep(self._interval)
        return replies


app = ServerApp()


def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    x_test, y_test = task.load_test_set()
    loss, accuracy = task.evaluate(arrays.to_numpy_ndarrays(), x_test, y_test)
    log(INFO, "[ROUND %s] centralised evaluation: accuracy=%.4f loss=%.4f (%s test images)",
        server_round, accuracy, loss, len(y_test))
    return MetricRecord({"accuracy": accuracy, "loss": loss})


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    num_rounds = int(cfg["num-server-rounds"])
    min_nodes = int(cfg["min-nodes"])
    strategy = FedAvg(
        fraction_train=float(cfg["fraction-train"]),
        fraction_evaluate=float(cfg["fraction-evaluate"]),
        min_train_nodes=min_nodes,
        min_evaluate_nodes=min_nodes,
        min_available_nodes=min_nodes,
    )
    interval = float(cfg.get("grid-poll-interval", 0.25))
    wave = int(cfg.get("max-parallel-nodes", 0))
    result = strategy.start(
        grid=PollingGrid(grid, interval or 3.0, wave) if interval > 0 or wave > 0 else grid,
        initial_arrays=ArrayRecord(task.initial_parameters()),
        num_rounds=num_rounds,
        evaluate_fn=central_evaluate,
    )
    accuracies = [float(m["accuracy"]) for _, m in sorted(result.evaluate_metrics_serverapp.items())]
    log(INFO, "Accuracy by round (0 = initial model): %s",
        ", ".join(f"{a:.4f}" for a in accuracies))
