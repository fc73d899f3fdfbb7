"""The sample app's data and model (apps/digits/digits/task.py): numpy only, learns."""
import subprocess
import sys

import numpy as np
import pytest

from fedops import paths

APP_DIR = paths.APPS_DIR / "digits"
sys.path.insert(0, str(APP_DIR))
from digits import task  # noqa: E402


def test_the_app_does_not_import_scikit_learn():
    """Every message starts a ClientApp process: scikit-learn's import would cost each
    one more CPU than its work. Its digits file is read without importing it."""
    code = ("import sys; from digits import task, client_app, server_app; "
            "task.load_partition(0, 3); print(sorted(m for m in sys.modules if m.startswith(('sklearn', 'scipy'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=APP_DIR, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_the_data_is_the_1797_digits_split_into_disjoint_shards():
    x_train, y_train, x_test, y_test = task._train_test()
    assert x_train.shape[1] == task.N_FEATURES and len(y_train) + len(y_test) == 1797
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert set(np.unique(y_test)) == set(range(task.N_CLASSES))
    shards = [task.load_partition(i, 4) for i in range(4)]
    assert sum(len(s[1]) for s in shards) == len(y_train)
    assert sum(len(s[3]) for s in shards) == len(y_test)
    rows = {r.tobytes() for s in shards for r in s[0]}
    assert len(rows) > 0.95 * len(y_train)       # a few images repeat in the data itself


@pytest.mark.parametrize("pid,num", [(3, 3), (-1, 2), (0, 0)])
def test_a_partition_outside_the_federation_is_refused(pid, num):
    with pytest.raises(ValueError, match="partition-id|num-partitions"):
        task.load_partition(pid, num)


def test_training_from_the_initial_model_lowers_the_loss_and_beats_chance():
    x, y, x_test, y_test = task.load_partition(0, 3)
    start = task.initial_parameters()
    loss0, acc0 = task.evaluate(start, x_test, y_test)
    params, train_loss = task.train(start, x, y, steps=20)
    loss1, acc1 = task.evaluate(params, x_test, y_test)
    assert loss1 < loss0 and train_loss < loss0
    assert acc0 < 0.2 < 0.8 < acc1                 # 10 classes: chance is 0.1
    assert not np.any(start[0]), "train() must not change the parameters it was given"


def test_a_shard_missing_classes_still_trains():
    """With dozens of SuperNodes a shard can lack a class (scikit-learn's model refused that)."""
    x, y, _, _ = task.load_partition(0, 120)
    assert len(np.unique(y)) < task.N_CLASSES
    params, loss = task.train(task.initial_parameters(), x, y, steps=5)
    assert params[0].shape == (task.N_CLASSES, task.N_FEATURES) and np.isfinite(loss)


def test_a_missing_scikit_learn_says_what_to_install(monkeypatch):
    monkeypatch.setattr(task.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install scikit-learn"):
        task.data_file()
