"""Data, model and parameter helpers shared by the ServerApp and the ClientApp.

The data set is scikit-learn's bundled `load_digits` (1797 8x8 images, 10 classes): it
ships inside the scikit-learn wheel, so nothing is downloaded at run time. A fixed,
stratified 25 % of it is the test set; the rest is shuffled with a fixed seed and split
into `num-partitions` disjoint shards, one per SuperNode (`partition-id`).
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split

N_CLASSES = 10
N_FEATURES = 64
SPLIT_SEED = 42
SHUFFLE_SEED = 1234
TEST_FRACTION = 0.25


@lru_cache(maxsize=1)
def _train_test() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float64) / 16.0   # pixel intensities 0..16 -> 0..1
    return tuple(train_test_split(x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                  stratify=y))


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
    x_train, x_test, y_train, y_test = _train_test()
    tr = _shard(len(y_train), partition_id, num_partitions)
    te = _shard(len(y_test), partition_id, num_partitions)
    return x_train[tr], y_train[tr], x_test[te], y_test[te]


def load_test_set():
    """The whole held-out test set (the ServerApp's centralised evaluation)."""
    _, x_test, _, y_test = _train_test()
    return x_test, y_test


def initial_parameters() -> list[np.ndarray]:
    """The global model before round 1: all zeros (uniform class probabilities)."""
    return [np.zeros((N_CLASSES, N_FEATURES)), np.zeros(N_CLASSES)]


def new_model(params: list[np.ndarray], max_iter: int = 3, c: float = 1.0) -> LogisticRegression:
    """A multinomial logistic regression holding `params` ([coef, intercept]); fit()
    continues from them (warm start, L-BFGS)."""
    model = LogisticRegression(C=c, max_iter=max_iter, warm_start=True)
    model.classes_ = np.arange(N_CLASSES)
    model.coef_ = np.array(params[0], dtype=np.float64, copy=True)
    model.intercept_ = np.array(params[1], dtype=np.float64, copy=True)
    return model


def get_parameters(model: LogisticRegression) -> list[np.ndarray]:
    return [model.coef_, model.intercept_]


def train(model: LogisticRegression, x: np.ndarray, y: np.ndarray) -> float:
    """A few warm-started L-BFGS iterations; returns the training log-loss."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)   # max_iter is small on purpose
        model.fit(x, y)
    return float(log_loss(y, model.predict_proba(x), labels=np.arange(N_CLASSES)))


def evaluate(model: LogisticRegression, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(log-loss, accuracy) of the model on (x, y)."""
    proba = model.predict_proba(x)
    loss = float(log_loss(y, proba, labels=np.arange(N_CLASSES)))
    accuracy = float((np.argmax(proba, axis=1) == y).mean())
    return loss, accuracy
