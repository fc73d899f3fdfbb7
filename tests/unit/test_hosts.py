from fedops import hosts


def test_block_lists_every_public_hostname(fed):
    block = hosts.block(fed, "flfed")
    line = block.splitlines()[1]
    assert line.startswith("127.0.0.1 ")
    for name in ("fl.localhost", "auth.fl.localhost", "fleet.fl.localhost", "control.fl.localhost",
                 "hub.fl.localhost", "grafana.fl.localhost", "prometheus.fl.localhost"):
        assert name in line.split()


def test_install_and_remove_are_idempotent_and_keep_other_lines(fed, tmp_path):
    path = tmp_path / "hosts"
    original = "127.0.0.1 localhost\n::1 localhost\n"
    path.write_text(original)
    assert hosts.install(path, fed, "flfed") is True
    assert hosts.install(path, fed, "flfed") is False
    text = path.read_text()
    assert text.startswith(original) and text.count("# BEGIN flfed") == 1
    assert hosts.remove(path, "flfed") is True
    assert hosts.remove(path, "flfed") is False
    assert path.read_text() == original


def test_install_replaces_an_outdated_block(fed, tmp_path):
    path = tmp_path / "hosts"
    path.write_text("# BEGIN flfed (managed by `invoke hosts`)\n127.0.0.1 old.example\n# END flfed\n")
    hosts.install(path, fed, "flfed")
    assert "old.example" not in path.read_text() and "auth.fl.localhost" in path.read_text()
