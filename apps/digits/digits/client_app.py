"""ClientApp: trains and evaluates the global model on this SuperNode's partition.

The partition comes from the SuperNode's node config (`--node-config
"partition-id=N num-partitions=M"`), set per organisation by the platform.
"""
from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from digits import task

app = ClientApp()


def _partition(context: Context):
    try:
        pid = int(context.node_config["partition-id"])
        num = int(context.node_config["num-partitions"])
    except KeyError as exc:
        raise RuntimeError(f"the SuperNode's node config has no {exc.args[0]!r}: start it with "
                           "--node-config \"partition-id=N num-partitions=M\"") from None
    return task.load_partition(pid, num)


@app.train()
def train(msg: Message, context: Context) -> Message:
    x_train, y_train, _, _ = _partition(context)
    cfg = context.run_config
    params, train_loss = task.train(msg.content["arrays"].to_numpy_ndarrays(), x_train, y_train,
                                    steps=int(cfg["local-steps"]),
                                    learning_rate=float(cfg["learning-rate"]), c=float(cfg["c"]))
    _, train_acc = task.evaluate(params, x_train, y_train)
    content = RecordDict({
        "arrays": ArrayRecord(params),
        "metrics": MetricRecord({"train_loss": train_loss, "train_accuracy": train_acc,
                                 "num-examples": len(y_train)}),
    })
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    _, _, x_test, y_test = _partition(context)
    loss, accuracy = task.evaluate(msg.content["arrays"].to_numpy_ndarrays(), x_test, y_test)
    content = RecordDict({
        "metrics": MetricRecord({"eval_loss": loss, "eval_accuracy": accuracy,
                                 "num-examples": len(y_test)}),
    })
    return Message(content=content, reply_to=msg)
