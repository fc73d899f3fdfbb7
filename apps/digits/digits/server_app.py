"""ServerApp: FedAvg (flwr.serverapp.strategy.FedAvg, Message API) over the SuperNodes,
plus a centralised evaluation of the global model on the whole test set after every
round, so the accuracy per round is visible in the run's log."""
from __future__ import annotations

from logging import INFO

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from digits import task

app = ServerApp()


def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    x_test, y_test = task.load_test_set()
    loss, accuracy = task.evaluate(task.new_model(arrays.to_numpy_ndarrays()), x_test, y_test)
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
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(task.initial_parameters()),
        num_rounds=num_rounds,
        train_config=ConfigRecord({"local-iterations": int(cfg["local-iterations"])}),
        evaluate_fn=central_evaluate,
    )
    accuracies = [float(m["accuracy"]) for _, m in sorted(result.evaluate_metrics_serverapp.items())]
    log(INFO, "Accuracy by round (0 = initial model): %s",
        ", ".join(f"{a:.4f}" for a in accuracies))
