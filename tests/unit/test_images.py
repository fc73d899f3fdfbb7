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


def test_a_dockerignore_decides_what_a_context_sends(tmp_path):
    """The notebook image builds from the checkout's root: only what .dockerignore lets
    in counts, and folders it keeps out (a virtualenv) are not even walked."""
    root = tmp_path / "root"
    for rel in ("apps/digits/pyproject.toml", "apps/digits/digits/task.py", "apps/other/x.py",
                "services/notebook/Dockerfile", "services/notebook/tests/test_x.py",
                "services/notebook/__pycache__/x.pyc", "services/postgres/Dockerfile",
                ".venv/lib/big.py", "README.md"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / ".dockerignore").write_text("# comment\n*\n!apps/digits\n!services/notebook\n**/__pycache__\n"
                                        "services/notebook/tests\n")
    sent = {str(p.relative_to(root)) for p in images.context_files(root)}
    assert sent == {"apps/digits/pyproject.toml", "apps/digits/digits/task.py", "services/notebook/Dockerfile"}
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    spec = {"context": str(root), "dockerfile": "services/notebook/Dockerfile"}
    first = images.inputs_digest(spec, ca, "b")
    (root / "README.md").write_text("changed")
    (root / ".venv" / "lib" / "big.py").write_text("changed")
    assert images.inputs_digest(spec, ca, "b") == first
    (root / "apps" / "digits" / "digits" / "task.py").write_text("changed")
    assert images.inputs_digest(spec, ca, "b") != first


def test_dockerignore_patterns_follow_dockers_rules(tmp_path):
    (tmp_path / ".dockerignore").write_text("*.md\n!KEEP.md\nbuild/**/*.o\ndocs\n")
    rules = images._ignore_rules(tmp_path)
    assert images._ignored("README.md", rules) and not images._ignored("KEEP.md", rules)
    assert not images._ignored("sub/README.md", rules)            # `*` stays in one segment
    assert images._ignored("build/a/b/x.o", rules) and images._ignored("build/x.o", rules)
    assert images._ignored("docs/deep/file.txt", rules)           # a folder keeps out its files
    assert not images._ignored("src/main.c", rules)
