"""Backup and recovery (task list 8.1): `invoke backup`, then `invoke restore` brings the
databases, the SuperLink's state and the users' notebook workspaces back (it restarts
keycloak and the superlink, stops the notebook servers and leaves every service
healthy)."""
import json
import shutil
import stat
import tarfile
import time

import pytest

from fedops import backup, federation, secrets
from fedops.stack import ps as stack_ps, wait_healthy
from stackenv import completed_run, connect, wait_all_online
import workspace
from test_notebooks import docker_exec


def runs() -> dict[str, str]:
    return {r["run-id"]: r["status"] for r in federation.runs()}


@pytest.fixture
def private_tmp(tmp_path):
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)    # the backup holds the CA key and secrets


def test_backup_then_restore_brings_the_state_back(stack, private_tmp):
    tmp_path = private_tmp
    marker = f"before backup {time.time_ns()}"
    with connect(stack, "flower") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS backup_probe (id serial primary key, note text)")
        conn.execute("INSERT INTO backup_probe (note) VALUES (%s)", (marker,))
    workspace.write(stack, "observer", "backup-probe.txt", marker)
    completed_run()
    runs_before = runs()

    # ---- backup
    t0 = time.time()
    out = stack.invoke("backup", "--output", str(tmp_path / "backups")).stdout
    took_backup = time.time() - t0
    [folder] = list((tmp_path / "backups").iterdir())
    assert f"backup written to {folder}" in out
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in folder.iterdir())
    manifest = backup.verify(folder)           # every sha256 and size matches
    assert manifest == json.loads((folder / "manifest.json").read_text())
    assert manifest["project"] == stack.setting("COMPOSE_PROJECT_NAME")
    assert manifest["versions"]["flwr"] == "1.42.0" and manifest["versions"]["postgres"].startswith("17")
    assert {"flower", "keycloak", "jupyterhub", "grafana"} <= set(manifest["postgres"]["databases"])
    assert set(manifest["files"]) == {p.name for p in folder.iterdir()} - {"manifest.json"}
    for db in manifest["postgres"]["databases"]:
        assert (folder / f"postgres-{db}.dump").read_bytes()[:5] == b"PGDMP"
    assert (folder / "superlink-state.db").read_bytes()[:16] == b"SQLite format 3\x00"
    with tarfile.open(folder / "ca-pki.tar") as tar:
        assert {"ca/pki/ca.crt", "ca/pki/private/ca.key"} <= set(tar.getnames())
    with tarfile.open(folder / "secrets.tar") as tar:
        assert "secrets/postgres_password" in tar.getnames()
    with tarfile.open(folder / "config.tar") as tar:
        assert "federation.yaml" in tar.getnames()
    # Each user's notebook workspace (home volume), owners as stored.
    assert manifest["notebooks"]["workspaces"]["observer"] == "notebook-home-observer.tar"
    with tarfile.open(folder / "notebook-home-observer.tar") as tar:
        probe = tar.getmember("jovyan/work/backup-probe.txt")
        assert probe.uid == 1000 and tar.extractfile(probe).read().decode() == marker

    # ---- refusals that change nothing: no terminal and no --yes; a changed byte
    proc = stack.invoke("restore", str(folder), check=False, input="")
    assert proc.returncode == 2 and "needs a confirmation" in proc.stderr
    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered)
    dump = tampered / "postgres-flower.dump"
    data = bytearray(dump.read_bytes())
    data[-1] ^= 0x01
    dump.write_bytes(bytes(data))
    proc = stack.invoke("restore", str(tampered), "--yes", check=False)
    assert proc.returncode == 2 and "postgres-flower.dump: sha256 differs" in proc.stderr

    # ---- change the state: the marker row goes, a SuperNode key is registered
    with connect(stack, "flower") as conn:
        conn.execute("DELETE FROM backup_probe WHERE note = %s", (marker,))
    server = workspace.start(stack, "observer")
    assert docker_exec(server, "sh", "-c", "echo changed > ~/work/backup-probe.txt && "
                                           "echo new > ~/work/after-backup.txt").returncode == 0
    state, probe_id = federation.register_key(secrets.new_supernode_key("backup-probe")[1], "backupprobe")
    assert state == "registered"
    try:
        assert "backupprobe" in federation.node_names().values()

        # ---- restore
        t0 = time.time()
        proc = stack.invoke("restore", str(folder), "--yes", check=False)
        took_restore = time.time() - t0
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "all" in proc.stdout and "services healthy" in proc.stdout

        with connect(stack, "flower") as conn:
            assert conn.execute("SELECT count(*) FROM backup_probe WHERE note = %s", (marker,)).fetchone()[0] == 1
        assert "backupprobe" not in federation.node_names().values()
        assert runs() == runs_before
        assert workspace.read("observer", "backup-probe.txt") == (1000, marker)
        assert workspace.read("observer", "after-backup.txt") == (-1, "")     # as at the backup
        states = stack_ps()
        assert states and all(s.state == "running" for s in states), states
        wait_healthy([s.service for s in states], timeout=120)   # every service answers its own probe
        wait_all_online(stack)
    finally:
        leftover = [i for i, n in federation.node_names().items() if n == "backupprobe"]
        for node_id in leftover:
            federation.unregister(node_id)
    print(f"\nbackup {took_backup:.1f}s, {sum(f['size'] for f in manifest['files'].values())} bytes; "
          f"restore {took_restore:.1f}s")
