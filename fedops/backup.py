"""Backup and recovery (task list 8.1): `invoke backup` and `invoke restore`.

A backup is one folder, backups/<UTC timestamp>/ (0700, files 0600: it holds the CA key
and every secret), with:

  postgres-<db>.dump     pg_dump custom format of each database (not `postgres`, the
                         maintenance database, nor the templates), taken from the running
                         container over its local socket as the postgres user (peer)
  postgres-globals.sql   pg_dumpall --globals-only (roles; for reference: the entrypoint
                         reconciles roles and passwords from secrets/ at every start)
  superlink-state.db     the SuperLink's SQLite state, copied online with SQLite's backup
                         API inside its container, integrity-checked
  ca-pki.tar             ca/pki (the CA, its key included)
  secrets.tar            secrets/
  config.tar             federation.yaml, federation.local.yaml, .env.local (present ones)
  notebook-home-<user>.tar
                         each user's notebook workspace (the home volume
                         jupyter-<project>-home-<user>), archived by the engine with
                         numeric owners, while servers may run
  manifest.json          time, compose project, versions, size and sha256 of every file

Each database dump is a consistent snapshot of that database; the databases belong to
different consumers, so they are not dumped in one transaction (nor with the
workspaces: a file saved during the backup may be missing from it). Restore checks every
checksum before it touches anything; it replaces each backed-up workspace's contents
(the notebook servers are stopped first: users start them again), and leaves
workspaces the backup does not have alone.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from . import compose, config, federation, paths, preflight, prepare, stack, vendor
from .errors import FedopsError
from .services import by_name
from .ui import step

MANIFEST = "manifest.json"
FORMAT = 1
PG_SOCKET = "/run/postgresql"
MAINTENANCE_DB = "postgres"           # never dropped: the entrypoint connects to it
DB_CONSUMERS = ("keycloak", "jupyterhub", "grafana")   # services to stop during a restore
GLOBALS_FILE = "postgres-globals.sql"
SUPERLINK_FILE = "superlink-state.db"
SUPERLINK_DB = federation.SUPERLINK_STATE_DB
SUPERLINK_USER = f"{by_name('superlink').uid}:{by_name('superlink').uid}"
CA_TAR, SECRETS_TAR, CONFIG_TAR = "ca-pki.tar", "secrets.tar", "config.tar"
WORKSPACE_TAR = "notebook-home-{user}.tar"
SECRETS_COMMITTED = {".gitignore", "README.md"}   # in secrets/, but not secrets
DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
FILE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# Inside the SuperLink container: an online copy with SQLite's backup API (a consistent
# snapshot while the SuperLink keeps writing), checked, written to stdout, removed.
SQLITE_BACKUP_PY = """
import os, shutil, sqlite3, sys
tmp = '/tmp/fl-backup-state.db'
try:
    src = sqlite3.connect('file:%s?mode=ro' % sys.argv[1], uri=True)
    dst = sqlite3.connect(tmp)
    src.backup(dst)
    src.close()
    check = dst.execute('PRAGMA integrity_check').fetchone()[0]
    dst.execute('PRAGMA journal_mode=DELETE')
    dst.close()
    if check != 'ok':
        sys.exit('integrity_check: ' + check)
    with open(tmp, 'rb') as fh:
        shutil.copyfileobj(fh, sys.stdout.buffer)
finally:
    if os.path.exists(tmp):
        os.remove(tmp)
"""

# In a one-off container of the SuperLink image with its volume: replace the state file
# (stale WAL and shared-memory files would be replayed onto it, so they go too).
SQLITE_PUT_SH = (f"set -e; cat > {SUPERLINK_DB}.restore; "
                 f"rm -f {SUPERLINK_DB}-wal {SUPERLINK_DB}-shm {SUPERLINK_DB}-journal; "
                 f"chmod 0644 {SUPERLINK_DB}.restore; mv {SUPERLINK_DB}.restore {SUPERLINK_DB}")


# ---------------------------------------------------------------- files and manifest
def timestamp(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")


def private_dir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def new_backup_dir(parent: Path | None = None, now: dt.datetime | None = None) -> Path:
    """A new, empty, private parent/<UTC timestamp> folder (suffixed -1, -2 on a clash)."""
    parent = private_dir(Path(parent or paths.BACKUPS_DIR))
    base = timestamp(now)
    folder, n = parent / base, 0
    while True:
        try:
            folder.mkdir(mode=0o700)
            break
        except FileExistsError:
            n += 1
            folder = parent / f"{base}-{n}"
    os.chmod(folder, 0o700)
    return folder


def private_open(path: Path):
    """A new file, mode 0600 from the start (never readable by others, even briefly)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: Path, meta: dict) -> dict:
    """manifest.json listing every other file in the folder with its size and sha256."""
    files = {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = {"format": FORMAT, **meta, "files": files}
    with private_open(folder / MANIFEST) as fh:
        fh.write((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return manifest


def verify(folder: Path) -> dict:
    """The manifest, once every file it lists has its recorded size and checksum."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FedopsError(f"{folder} is not a folder", "name a backup folder, e.g. backups/20260101T000000Z")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise FedopsError(f"{folder} has no {MANIFEST}: not a backup, or an unfinished one",
                          "name a folder written by `invoke backup`")
    except json.JSONDecodeError as exc:
        raise FedopsError(f"{folder / MANIFEST} is not valid JSON ({exc})", "use another backup")
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise FedopsError(f"{folder / MANIFEST} is not a format-{FORMAT} backup manifest",
                          "use a backup written by this version of `invoke backup`")
    problems = []
    for name, info in sorted(manifest["files"].items()):
        path = folder / name
        if not FILE_NAME.match(name) or name in (".", ".."):
            problems.append(f"{name!r}: not a plain file name")
        elif not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != info.get("size"):
            problems.append(f"{name}: size {path.stat().st_size}, expected {info.get('size')}")
        elif sha256_file(path) != info.get("sha256"):
            problems.append(f"{name}: sha256 differs from the manifest")
    if problems:
        raise FedopsError(f"backup {folder} failed verification, nothing was restored:\n    "
                          + "\n    ".join(problems),
                          "the backup is damaged or was changed: restore another one")
    return manifest


def human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# ---------------------------------------------------------------- docker compose
def config_files() -> tuple[Path, ...]:
    """The configuration a deployment consists of (the committed file and the local ones)."""
    return (paths.CONFIG, paths.LOCAL_CONFIG, paths.LOCAL_ENV)


def _compose(*args: str, stdin=None, stdout=subprocess.PIPE, timeout: float = 1800) -> subprocess.CompletedProcess:
    return compose.call(*args, stdin=stdin, stdout=stdout, timeout=timeout, text=False)


def _check(proc: subprocess.CompletedProcess, what: str, fix: str) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        err = (proc.stderr or b"").decode(errors="replace").strip()
        raise FedopsError(f"{what} failed: {err[-800:]}", fix)
    return proc


def require_running(names=("postgres", "superlink")) -> None:
    states = {s.service: s.state for s in stack.ps()}
    down = [n for n in names if states.get(n) != "running"]
    if down:
        raise FedopsError(f"{', '.join(down)} {'is' if len(down) == 1 else 'are'} not running: "
                          "backup and restore work on the running stack",
                          "start it with `invoke up`, then run this again")


def psql(sql: str, db: str = MAINTENANCE_DB) -> str:
    proc = _compose("exec", "-T", "postgres", "psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                    "-h", PG_SOCKET, "-U", "postgres", "-d", db, "-c", sql, timeout=300)
    _check(proc, f"psql ({sql[:60]})", "see `invoke logs --service postgres`")
    return proc.stdout.decode().strip()


def databases() -> list[str]:
    out = psql("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
               f"AND datname <> '{MAINTENANCE_DB}' ORDER BY 1")
    return [d for d in out.splitlines() if d]


# ---------------------------------------------------------------- backup
def dump_postgres(folder: Path) -> dict:
    dbs = databases()
    for db in dbs:
        with private_open(folder / f"postgres-{db}.dump") as fh:
            _check(_compose("exec", "-T", "postgres", "pg_dump", "-Fc", "-h", PG_SOCKET, "-U", "postgres",
                            "-d", db, stdout=fh), f"pg_dump {db}", "see `invoke logs --service postgres`")
    with private_open(folder / GLOBALS_FILE) as fh:
        _check(_compose("exec", "-T", "postgres", "pg_dumpall", "--globals-only", "-h", PG_SOCKET,
                        "-U", "postgres", stdout=fh), "pg_dumpall --globals-only",
               "see `invoke logs --service postgres`")
    return {"version": psql("SHOW server_version"), "databases": dbs}


def copy_superlink_state(folder: Path) -> dict:
    with private_open(folder / SUPERLINK_FILE) as fh:
        _check(_compose("exec", "-T", "superlink", "python3", "-c", SQLITE_BACKUP_PY, SUPERLINK_DB, stdout=fh),
               "copying the SuperLink state", "see `invoke logs --service superlink`")
    version = _compose("exec", "-T", "superlink", "python3", "-c",
                       "import importlib.metadata as m; print(m.version('flwr'))", timeout=120)
    return {"flwr": version.stdout.decode().strip() if version.returncode == 0 else "unknown"}


def _tar_in_container(out: Path, src: Path, arcname: str) -> None:
    """tar through the engine (root) when the host user cannot read a file (SuperNode
    keys belong to the SuperNode's uid)."""
    from . import engine
    try:
        data = engine.run_helper(compose.setting("BASE_IMAGE", "debian:trixie-slim"),
                                 ["tar", "-C", "/src", "--numeric-owner", "-cf", "-", arcname],
                                 volumes={str(src.resolve()): {"bind": f"/src/{arcname}", "mode": "ro"}})
    except Exception as exc:
        raise FedopsError(f"archiving {src} (in a container) failed: {exc}",
                          "check `docker info`; or run the backup as root")
    with private_open(out) as fh:
        fh.write(data)


def write_tar(out: Path, members: list[tuple[Path, str]]) -> list[str]:
    """A tar of the members that exist (ownership and modes kept); returns their names."""
    present = [(src, arc) for src, arc in members if src.exists()]
    try:
        with private_open(out) as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for src, arc in present:
                tar.add(src, arcname=arc)
    except PermissionError:
        if len(present) != 1 or not present[0][0].is_dir():
            raise
        _tar_in_container(out, *present[0])
    return [arc for _, arc in present]


def helper_image() -> str:
    """The image of the short-lived helper containers (tar): the project's base image."""
    return compose.setting("BASE_IMAGE", "debian:trixie-slim")


def dump_workspaces(folder: Path) -> dict:
    """Each user's notebook home volume as notebook-home-<user>.tar; {user: file}."""
    from . import engine
    out = {}
    for user, volume in sorted(engine.notebook_home_volumes(compose.project_name()).items()):
        name = WORKSPACE_TAR.format(user=user)
        if not FILE_NAME.match(name):
            print(f"    warning: skipped the volume {volume}: {user!r} is not a plain file name")
            continue
        with private_open(folder / name) as fh:
            try:
                engine.volume_to_tar(volume, helper_image(), fh)
            except FedopsError:
                raise
            except Exception as exc:
                raise FedopsError(f"archiving the notebook workspace {volume} failed: {exc}",
                                  "check `docker info`, then run the backup again")
        out[user] = name
    return out


def create(parent: Path | None = None) -> tuple[Path, dict]:
    """Take a backup of the running stack; returns its folder and manifest."""
    require_running()
    t0 = time.time()
    folder = new_backup_dir(parent)
    print(f"backup into {folder}", flush=True)
    try:
        meta = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "project": compose.project_name()}
        step("PostgreSQL: pg_dump of each database, and the roles")
        meta["postgres"] = dump_postgres(folder)
        print(f"    {', '.join(meta['postgres']['databases'])} (PostgreSQL {meta['postgres']['version']})")
        step("SuperLink: online copy of its SQLite state (SQLite backup API)")
        meta["versions"] = {**copy_superlink_state(folder), "postgres": meta["postgres"]["version"]}
        print(f"    {human((folder / SUPERLINK_FILE).stat().st_size)}, integrity ok")
        step("CA (ca/pki), secrets/ and the local configuration")
        if not (paths.PKI_DIR / "ca.crt").exists():
            print("    warning: no ca/pki/ca.crt: the backup has no CA")
        write_tar(folder / CA_TAR, [(paths.PKI_DIR, "ca/pki")])
        write_tar(folder / SECRETS_TAR, [(paths.SECRETS_DIR, "secrets")])
        meta["config"] = write_tar(folder / CONFIG_TAR, [(p, p.name) for p in config_files()])
        print(f"    config: {', '.join(meta['config'])}")
        step("notebook workspaces (each user's home volume)")
        meta["notebooks"] = {"workspaces": dump_workspaces(folder)}
        print(f"    {', '.join(meta['notebooks']['workspaces']) or 'none yet'}")
        step("manifest (sizes and sha256)")
        manifest = write_manifest(folder, meta)
    except BaseException:
        # an unfinished backup has no manifest, so restore refuses it; say so
        print(f"    the backup in {folder} is incomplete (no manifest): delete it", file=sys.stderr)
        raise
    total = sum(f["size"] for f in manifest["files"].values())
    print(f"    {len(manifest['files'])} files, {human(total)}, in {time.time() - t0:.1f}s")
    return folder, manifest


# ---------------------------------------------------------------- restore
def has_ca() -> bool:
    return (paths.PKI_DIR / "ca.crt").exists() or (paths.PKI_DIR / "private" / "ca.key").exists()


def has_secrets() -> bool:
    return paths.SECRETS_DIR.is_dir() and any(p.name not in SECRETS_COMMITTED
                                               for p in paths.SECRETS_DIR.iterdir())


def check_ca_and_secrets(folder: Path, force: bool) -> None:
    """Refuse (before anything changes) to replace a present CA or secrets without --force."""
    for name in (CA_TAR, SECRETS_TAR):
        if not (folder / name).is_file():
            raise FedopsError(f"the backup has no {name}", "restore without --with-ca-and-secrets")
    present = [what for what, there in (("a CA (ca/pki)", has_ca()), ("secrets (secrets/)", has_secrets()))
               if there]
    if present and not force:
        raise FedopsError(f"there is {' and '.join(present)} already: a restore never replaces them silently",
                          "add --force to replace them (the current ones are moved to "
                          "backups/replaced-<time>/), or restore without --with-ca-and-secrets")


def _extract(tar_path: Path, prefix: str) -> None:
    with tarfile.open(tar_path) as tar:
        bad = [m.name for m in tar.getmembers() if not (m.name == prefix or m.name.startswith(prefix + "/"))]
        if bad:
            raise FedopsError(f"{tar_path.name} holds unexpected entries {bad[:3]}", "use another backup")
        tar.extractall(paths.instance(), numeric_owner=True, filter="tar")


def restore_ca_and_secrets(folder: Path) -> list[str]:
    """Put ca/pki and secrets/ back; present ones (allowed by --force) are moved aside."""
    aside = None
    done = []
    for tar_name, target, present in ((CA_TAR, paths.PKI_DIR, has_ca()),
                                      (SECRETS_TAR, paths.SECRETS_DIR, has_secrets())):
        if target.exists() and (present or any(target.iterdir())):
            aside = aside or private_dir(paths.BACKUPS_DIR / f"replaced-{timestamp()}")
            shutil.move(str(target), str(aside / target.name))
            print(f"    moved the current {target.relative_to(paths.instance())} to {aside / target.name}")
        elif target.exists():
            target.rmdir()
        _extract(folder / tar_name, str(target.relative_to(paths.instance())))
        done.append(str(target.relative_to(paths.instance())))
    try:
        prepare.give_supernode_keys(config.load())
    except (FedopsError, FileNotFoundError) as exc:
        print(f"    note: SuperNode keys not handed over yet ({exc}); `invoke up` does it")
    return done


def restore_postgres(folder: Path, manifest: dict) -> None:
    dbs = manifest.get("postgres", {}).get("databases", [])
    for db in dbs:
        if not DB_NAME.match(db) or db == MAINTENANCE_DB:
            raise FedopsError(f"the manifest names the database {db!r}", "use another backup")
    # with the optional profiles: a running Grafana (profile grafana) is a consumer too
    running = {s.service for s in stack.ps(profiles=vendor.PROFILES) if s.state == "running"}
    consumers = [s for s in DB_CONSUMERS if s in running]
    if consumers:
        print(f"    stopping {', '.join(consumers)} (they use the databases)", flush=True)
        _check(compose.call("stop", *consumers, profiles=vendor.PROFILES, text=False),
               f"stopping {', '.join(consumers)}", "see `invoke status`")
    for db in dbs:
        t0 = time.time()
        psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        with open(folder / f"postgres-{db}.dump", "rb") as fh:
            _check(_compose("exec", "-T", "postgres", "pg_restore", "--create", "--exit-on-error",
                            "-h", PG_SOCKET, "-U", "postgres", "-d", MAINTENANCE_DB, stdin=fh),
                   f"pg_restore {db}",
                   f"the database {db} may be incomplete: fix the cause and run the restore again "
                   f"(`invoke up` starts {', '.join(consumers) or 'the services'} meanwhile)")
        print(f"    {db} restored ({time.time() - t0:.1f}s)", flush=True)
    if consumers:
        print(f"    starting {', '.join(consumers)}", flush=True)
        _check(_compose("start", *consumers), f"starting {', '.join(consumers)}", "run `invoke up`")
        stack.wait_healthy(consumers)


def restore_superlink(folder: Path) -> None:
    print("    stopping superlink", flush=True)
    _check(_compose("stop", "superlink"), "stopping superlink", "see `invoke status`")
    with open(folder / SUPERLINK_FILE, "rb") as fh:
        _check(_compose("run", "--rm", "--no-deps", "-T", "--user", SUPERLINK_USER, "--entrypoint", "sh",
                        "superlink", "-c", SQLITE_PUT_SH, stdin=fh),
               "putting the state into the superlink-data volume",
               "the old state is still in place unless the message says otherwise; "
               "run the restore again, or `invoke up` to start the SuperLink as it is")
    print(f"    {SUPERLINK_DB} replaced; starting superlink", flush=True)
    _check(_compose("start", "superlink"), "starting superlink", "run `invoke up`")
    stack.wait_healthy(["superlink"])


def backed_up_workspaces(manifest: dict) -> dict[str, str]:
    """{user: file} of the workspaces in a backup, checked against the manifest's files."""
    workspaces = (manifest.get("notebooks") or {}).get("workspaces") or {}
    for user, name in workspaces.items():
        if name != WORKSPACE_TAR.format(user=user) or name not in manifest.get("files", {}):
            raise FedopsError(f"the manifest names the workspace {user!r} -> {name!r}", "use another backup")
    return workspaces


def restore_workspaces(folder: Path, manifest: dict) -> list[str]:
    """Put each backed-up workspace into this project's home volume of that user (made
    if missing), after stopping this project's notebook servers."""
    from . import engine
    workspaces = backed_up_workspaces(manifest)
    if not workspaces:
        return []
    project = compose.project_name()
    stopped = engine.remove_notebooks(project)
    if stopped:
        print(f"    stopped the notebook servers {', '.join(stopped)} (users start them again)", flush=True)
    done = []
    for user, name in sorted(workspaces.items()):
        volume = f"{engine.notebook_prefix(project)}-home-{user}"
        engine.tar_to_volume(str((folder / name).resolve()), volume, helper_image())
        print(f"    {volume} restored", flush=True)
        done.append(volume)
    return done


def restore(folder: Path, yes: bool = False, with_ca_and_secrets: bool = False, force: bool = False) -> bool:
    """Verify, confirm, then restore; returns False when the user declined."""
    folder = Path(folder)
    t0 = time.time()
    step(f"verifying {folder}")
    manifest = verify(folder)
    print(f"    {len(manifest['files'])} files match the manifest (taken {manifest.get('created', '?')}, "
          f"project {manifest.get('project', '?')})")
    if manifest.get("project") not in (None, compose.project_name()):
        print(f"    note: taken from project {manifest['project']}, restoring into {compose.project_name()}")
    if with_ca_and_secrets:
        check_ca_and_secrets(folder, force)
    try:
        require_running()
        running = True
    except FedopsError:
        if not with_ca_and_secrets:
            raise
        running = False
    workspaces = backed_up_workspaces(manifest)
    parts = (["ca/pki and secrets/"] if with_ca_and_secrets else []) + \
            (["the PostgreSQL databases " + ", ".join(manifest.get("postgres", {}).get("databases", [])),
              "the SuperLink state"] if running else []) + \
            ([f"the notebook workspaces of {', '.join(sorted(workspaces))} (their servers are stopped)"]
             if running and workspaces else [])
    if not preflight.confirm(f"Replace {'; '.join(parts)} with the backup's?", yes,
                             "restoring replaces live data"):
        print("nothing restored")
        return False
    if with_ca_and_secrets:
        step("CA and secrets")
        print(f"    restored {', '.join(restore_ca_and_secrets(folder))}")
        if not running:
            print("    the stack is not running: start it with `invoke up`, then restore the data with "
                  f"`invoke restore {folder} --yes`")
            return True
        print("    running services still use the old files: `invoke down` then `invoke up` loads them")
    step("PostgreSQL")
    restore_postgres(folder, manifest)
    step("SuperLink state")
    restore_superlink(folder)
    if workspaces:
        step("notebook workspaces")
        restore_workspaces(folder, manifest)
    step("SuperNode keys and health")
    federation.register_all(None, config.load())
    names = [s.service for s in stack.ps() if s.state in ("running", "restarting")]
    stack.wait_healthy(names)
    print(f"    all {len(names)} services healthy; restored in {time.time() - t0:.1f}s")
    return True
