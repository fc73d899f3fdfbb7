"""`./invoke test` is a guest: the operator's deployment on this machine (the
checkout's instance, its Compose project) is the same after the whole suite as before
it: containers (ids, states, start times), volumes, networks, the CA's fingerprint and
every file of its instance. Runs after every other test (marker `last`); the session
fixture checks again after the test deployment is torn down."""
import pytest

from fedops import paths

from testinstance import differences, operator_snapshot


@pytest.mark.last
def test_the_suite_left_the_operators_deployment_as_it_was(stack):
    after = operator_snapshot()
    changed = differences(stack.operator_before, after)
    print(f"\noperator's deployment {after['project']}: {len(after['containers'])} containers, "
          f"{len(after['volumes'])} volumes, {len(after['networks'])} networks, {len(after['files'])} files: "
          f"{'unchanged' if not changed else 'CHANGED'}")
    assert not changed, "\n".join(changed)
    assert not stack.instance.is_relative_to(paths.ROOT)   # the test deployment lived outside the checkout
