"""Which images an `up` hands to the builder (fedops/images.py): the inputs' digest."""
from fedops import images


def context(tmp_path):
    ctx = tmp_path / "svc"
    (ctx / "tests").mkdir(parents=True)
    (ctx / "Dockerfile").write_text("FROM base\nCOPY entrypoint.py /\n")
    (ctx / "entrypoint.py").write_text("print('hi')\n")
    (ctx / "tests" / "test_x.py").write_text("def test(): pass\n")
    return ctx


def test_the_digest_follows_what_reaches_the_image(tmp_path):
    ctx = context(tmp_path)
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    spec = {"context": str(ctx), "dockerfile": "Dockerfile", "args": {"FL_UID": "10080"}}
    first = images.inputs_digest(spec, ca, "sha256:base1")
    assert images.inputs_digest(spec, ca, "sha256:base1") == first                  # stable
    (ctx / "tests" / "test_x.py").write_text("def test(): assert 1\n")
    (ctx / "__pycache__").mkdir()
    (ctx / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert images.inputs_digest(spec, ca, "sha256:base1") == first                  # not in the image
    (ctx / "entrypoint.py").write_text("print('hi')\n# one line\n")
    changed = images.inputs_digest(spec, ca, "sha256:base1")
    assert changed != first                                                         # a one-line change
    assert images.inputs_digest({**spec, "args": {"FL_UID": "10081"}}, ca, "sha256:base1") != changed
    assert images.inputs_digest(spec, ca, "sha256:base2") != changed                # a new base image
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert images.inputs_digest(spec, ca, "sha256:base1") != changed                # another build CA
