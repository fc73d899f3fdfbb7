"""Backup and restore: the parts that need no Docker (manifest, folders, refusals)."""
import datetime as dt
import json
import stat
import tarfile

import pytest
from invoke import Exit, MockContext, Result

from fedops import backup, paths
from fedops.errors import FedopsError
from fedops.stack import ServiceState
from fedops.tasks import backup as backup_tasks


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def folder(tmp_path):
    """A finished backup: a few files and their manifest."""
    f = backup.new_backup_dir(tmp_path / "backups")
    for name, data in (("postgres-flower.dump", b"PGDMP\x00\x01"), ("superlink-state.db", b"SQLite" * 100)):
        with backup.private_open(f / name) as fh:
            fh.write(data)
    backup.write_manifest(f, {"created": "now", "project": "flfed",
                              "postgres": {"databases": ["flower"], "version": "17"}})
    return f


def test_backup_folder_is_a_private_utc_timestamp(tmp_path):
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    first = backup.new_backup_dir(tmp_path / "backups", now)
    second = backup.new_backup_dir(tmp_path / "backups", now)
    assert first.name == "20260102T030405Z" and second.name == "20260102T030405Z-1"
    assert mode(first) == mode(tmp_path / "backups") == 0o700
    assert paths.BACKUPS_DIR == paths.instance() / "backups"   # in the instance, not the checkout


def test_backups_are_git_ignored():
    assert "backups/" in (paths.ROOT / ".gitignore").read_text().splitlines()


def test_manifest_lists_every_file_with_size_and_checksum(folder):
    manifest = json.loads((folder / backup.MANIFEST).read_text())
    assert set(manifest["files"]) == {"postgres-flower.dump", "superlink-state.db"}
    assert manifest["files"]["superlink-state.db"]["size"] == 600
    assert manifest["project"] == "flfed" and manifest["format"] == backup.FORMAT
    assert all(mode(p) == 0o600 for p in folder.iterdir())
    assert backup.verify(folder)["files"] == manifest["files"]


def test_one_changed_byte_fails_verification(folder):
    path = folder / "superlink-state.db"
    data = bytearray(path.read_bytes())
    data[300] ^= 0x01                       # same size, one bit
    path.write_bytes(bytes(data))
    with pytest.raises(FedopsError, match="superlink-state.db: sha256 differs"):
        backup.verify(folder)


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "postgres-flower.dump").unlink(), "postgres-flower.dump: missing"),
    (lambda f: (f / "postgres-flower.dump").write_bytes(b"PGDMP"), "size 5, expected 7"),
    (lambda f: (f / backup.MANIFEST).unlink(), "no manifest.json"),
    (lambda f: (f / backup.MANIFEST).write_text("{"), "not valid JSON"),
])
def test_damaged_backups_are_refused(folder, damage, message):
    damage(folder)
    with pytest.raises(FedopsError, match=message):
        backup.verify(folder)


def test_a_manifest_cannot_point_outside_its_folder(folder):
    manifest = json.loads((folder / backup.MANIFEST).read_text())
    manifest["files"]["../secrets.tar"] = {"size": 1, "sha256": "0" * 64}
    (folder / backup.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(FedopsError, match="not a plain file name"):
        backup.verify(folder)


def test_tar_keeps_present_members_only(tmp_path):
    src = tmp_path / "pki"
    (src / "private").mkdir(parents=True)
    (src / "private" / "ca.key").write_text("key")
    out = tmp_path / "ca.tar"
    assert backup.write_tar(out, [(src, "ca/pki"), (tmp_path / "absent.yaml", "absent.yaml")]) == ["ca/pki"]
    assert mode(out) == 0o600
    with tarfile.open(out) as tar:
        assert "ca/pki/private/ca.key" in tar.getnames()


def test_backup_of_a_stopped_stack_says_to_start_it(monkeypatch):
    monkeypatch.setattr(backup.stack, "ps", lambda *a: [])
    with pytest.raises(Exit, match=r"(?s)not running.*invoke up"):
        backup_tasks.backup(MockContext(run=Result(""), repeat=True))


def running(monkeypatch):
    monkeypatch.setattr(backup.stack, "ps", lambda *a: [ServiceState(n, "running", "healthy", "")
                                                        for n in ("postgres", "superlink")])

    def must_not_run(*a, **kw):
        raise AssertionError("restored without a confirmation")
    monkeypatch.setattr(backup, "restore_postgres", must_not_run)
    monkeypatch.setattr(backup, "restore_superlink", must_not_run)


def test_restore_without_a_terminal_and_without_yes_refuses(folder, monkeypatch):
    running(monkeypatch)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(Exit, match="needs a confirmation"):
        backup_tasks.restore(MockContext(run=Result(""), repeat=True), str(folder))


def test_restore_declined_changes_nothing(folder, monkeypatch, capsys):
    running(monkeypatch)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    backup_tasks.restore(MockContext(run=Result(""), repeat=True), str(folder))
    assert "nothing restored" in capsys.readouterr().out


def test_restore_checks_checksums_before_asking(folder, monkeypatch):
    running(monkeypatch)
    (folder / "postgres-flower.dump").write_bytes(b"PGDMX\x00\x01")
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("asked before verifying"))
    with pytest.raises(Exit, match="failed verification, nothing was restored"):
        backup_tasks.restore(MockContext(run=Result(""), repeat=True), str(folder), yes=True)


def test_a_present_ca_is_never_replaced_without_force(folder, tmp_path, monkeypatch):
    pki, secrets_dir = tmp_path / "ca" / "pki", tmp_path / "secrets"
    (pki / "private").mkdir(parents=True)
    (pki / "private" / "ca.key").write_text("the current CA key")
    secrets_dir.mkdir()
    (secrets_dir / "README.md").write_text("committed, not a secret")
    monkeypatch.setenv(paths.INSTANCE_ENV, str(tmp_path))
    for name in (backup.CA_TAR, backup.SECRETS_TAR):
        (folder / name).write_bytes(b"")
    assert backup.has_ca() and not backup.has_secrets()
    with pytest.raises(FedopsError, match=r"(?s)a CA \(ca/pki\) already.*--force"):
        backup.check_ca_and_secrets(folder, force=False)
    backup.check_ca_and_secrets(folder, force=True)
    (folder / backup.CA_TAR).unlink()
    with pytest.raises(FedopsError, match="has no ca-pki.tar"):
        backup.check_ca_and_secrets(folder, force=True)


def test_forced_restore_moves_the_current_ca_aside_and_extracts_the_backups(tmp_path, monkeypatch):
    old, new = tmp_path / "old", tmp_path / "new"
    for root, key in ((old, "old key"), (new, "backed-up key")):
        (root / "ca" / "pki" / "private").mkdir(parents=True)
        (root / "ca" / "pki" / "private" / "ca.key").write_text(key)
        (root / "secrets").mkdir()
        (root / "secrets" / "postgres_password").write_text(key)
    f = backup.new_backup_dir(tmp_path / "backups")
    backup.write_tar(f / backup.CA_TAR, [(new / "ca" / "pki", "ca/pki")])
    backup.write_tar(f / backup.SECRETS_TAR, [(new / "secrets", "secrets")])
    monkeypatch.setenv(paths.INSTANCE_ENV, str(old))   # the instance restored into
    monkeypatch.setattr(backup.prepare, "give_supernode_keys", lambda fed: None)
    monkeypatch.setattr("fedops.config.load", lambda: None)
    assert backup.restore_ca_and_secrets(f) == ["ca/pki", "secrets"]
    assert (old / "ca" / "pki" / "private" / "ca.key").read_text() == "backed-up key"
    assert (old / "secrets" / "postgres_password").read_text() == "backed-up key"
    aside = next((old / "backups").glob("replaced-*"))
    assert (aside / "pki" / "private" / "ca.key").read_text() == "old key"
    assert mode(aside) == 0o700


def workspace_backup(tmp_path, workspaces: dict, files=("notebook-home-rita.tar",)):
    f = backup.new_backup_dir(tmp_path / "backups")
    for name in files:
        with backup.private_open(f / name) as fh:
            fh.write(b"tar")
    backup.write_manifest(f, {"created": "now", "project": "flfed", "postgres": {"databases": []},
                              "notebooks": {"workspaces": workspaces}})
    return f


def test_the_workspaces_a_restore_replaces_are_named_in_its_question(tmp_path, monkeypatch):
    f = workspace_backup(tmp_path, {"rita": "notebook-home-rita.tar"})
    running(monkeypatch)
    asked = []
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "no")
    monkeypatch.setattr(backup, "restore_workspaces", lambda *a: pytest.fail("restored without a yes"))
    backup_tasks.restore(MockContext(run=Result(""), repeat=True), str(f))
    assert "notebook workspaces of rita" in asked[0] and "servers are stopped" in asked[0]


@pytest.mark.parametrize("workspaces", [
    {"rita": "secrets.tar"},                          # not the workspace's own file
    {"../rita": "notebook-home-../rita.tar"},         # a path, not a name
    {"bob": "notebook-home-bob.tar"},                 # not among the manifest's files
])
def test_a_manifest_naming_a_strange_workspace_is_refused(tmp_path, workspaces):
    f = workspace_backup(tmp_path, workspaces)
    with pytest.raises(FedopsError, match="names the workspace"):
        backup.backed_up_workspaces(backup.verify(f))
