"""Tests and benchmarks."""
import shlex
import sys

from invoke import task

from .. import paths
from . import clear_errors


@task(help={"unit": "only the unit tests (no Docker needed)",
            "stack": "only the tests against the running stack",
            "k": "pytest -k expression", "x": "stop at the first failure"})
@clear_errors
def test(c, unit=False, stack=False, k="", x=False):
    """Run the whole test suite: unit tests, then the stack brought up and tested from outside."""
    args = [sys.executable, "-m", "pytest"]
    if unit and not stack:
        args += ["tests/unit", "services"]
    elif stack and not unit:
        args.append("tests/stack")
    else:   # unit tests first: they fail fast and need no Docker
        args += ["tests/unit", "services", "tests/stack"]
    if k:
        args += ["-k", k]
    if x:
        args.append("-x")
    args.append("--durations=15")     # where the suite's time goes, in every run's output
    c.run(shlex.join(args), pty=sys.stdout.isatty(), env={"PYTHONPATH": str(paths.ROOT)})
