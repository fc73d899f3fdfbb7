"""Data, model and parameter helpers shared by the ServerApp and the ClientApp.

The data set is the handwritten digits that ship inside the scikit-learn wheel (the file
behind `sklearn.datasets.load_digits`: 1797 8x8 images, 10 classes), so nothing is
downloaded at run time. It is read with numpy alone: scikit-learn is located, not
imported, because every message starts a new ClientApp process and importing
scikit-learn's model code costs that process about 1.4 CPU-seconds, more than the
ClientApp's own work (docs/benchmarks.md, "Where a round's time goes").

A fixed, shuffled 25 % of the images is the test set; the rest is shuffled with a fixed
seed and split into `num-partitions` disjoint shards, one per SuperNode (`partition-id`).
The model is multinomial logistic regression (softmax) with L2 regularisation, trained
by full-batch gradient descent from the global model.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

N_CLASSES = 10
N_FEATURES = 64
SPLIT_SEED = 42
SHUFFLE_SEED = 1234
TEST_FRACTION = 0.25
DATA_FILE = Path("datasets", "data", "digits.csv.gz")   # inside the scikit-learn package


def data_file() -> Path:
    """The digits file in the installed scikit-learn package, found without importing it."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-learn is not installed: the digits data ships in its wheel "
                           "(pip install scikit-learn; the platform's images have it)")
    path = Path(next(iter(spec.submodule_search_locations)), DATA_FILE)
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: this scikit-learn does not ship the digits data")
    return path


@lru_cache(maxsize=1)
def _train_test() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test), pixel intensities scaled from 0..16 to 0..1."""
    table = np.loadtxt(data_file(), delimiter=",")
    x, y = table[:, :-1] / 16.0, table[:, -1].astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    n_test = round(len(y) * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def check_partition(partition_id: int, num_partitions: int) -> None:
    if num_partitions < 1:
        raise ValueError(f"num-partitions must be >= 1, got {num_partitions}")
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id must be in [0, {num_partitions}), got {partition_id}")


def _shard(n: int, partition_id: int, num_partitions: int) -> np.ndarray:
    order = np.random.default_rng(SHUFFLE_SEED).permutation(n)
    return np.array_split(order, num_partitions)[partition_id]


def load_partition(partition_id: int, num_partitions: int):
    """(x_train, y_train, x_test, y_test) of one SuperNode: disjoint shards of the
    training set and of the test set."""
    check_partition(partition_id, num_partitions)
    x_train, y_train, x_test, y_test = _train_test()
    tr = _shard(len(y_train), partition_id, num_partitions)
    te = _shard(len(y_test), partition_id, num_partitions)
    return x_train[tr], y_train[tr], x_test[te], y_test[te]


def load_test_set():
    """The whole held-out test set (the ServerApp's centralised evaluation)."""
    _, _, x_test, y_test = _train_test()
    return x_test, y_test


def initial_parameters() -> list[np.ndarray]:
    """The global model before round 1: all zeros (uniform class probabilities)."""
    return [np.zeros((N_CLASSES, N_FEATURES)), np.zeros(N_CLASSES)]


def _probabilities(params: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    logits = x @ params[0].T + params[1]
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def _log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, None)).mean())


def train(params: list[np.ndarray], x: np.ndarray, y: np.ndarray, steps: int = 20,
          learning_rate: float = 1.0, c: float = 1.0) -> tuple[list[np.ndarray], float]:
    """`steps` of full-batch gradient descent on the mean cross-entropy plus
    ||coef||^2 / (2 c n) (scikit-learn's objective for LogisticRegression(C=c), divided
    by n), from `params`. Returns (new params, training log-loss after the steps)."""
    coef = np.array(params[0], dtype=np.float64, copy=True)
    intercept = np.array(params[1], dtype=np.float64, copy=True)
    n = max(len(y), 1)
    onehot = np.eye(N_CLASSES)[y]
    for _ in range(steps):
        grad = (_probabilities([coef, intercept], x) - onehot) / n
        coef -= learning_rate * (grad.T @ x + coef / (c * n))
        intercept -= learning_rate * grad.sum(axis=0)
    return [coef, intercept], _log_loss(_probabilities([coef, intercept], x), y)


def evaluate(params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(log-loss, accuracy) of the model `params` on (x, y)."""
    proba = _probabilities(params, x)
    return _log_loss(proba, y), float((np.argmax(proba, axis=1) == y).mean())
