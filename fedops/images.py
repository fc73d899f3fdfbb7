"""Building the service images (docker compose build: BuildKit caches per layer, so a
change in one services/<name>/ folder rebuilds only that image)."""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from . import compose, engine, paths
from .errors import FedopsError

# Files in a build context that never reach an image.
IGNORED = ("__pycache__", ".pytest_cache", "tests")


def extra_ca() -> Path:
    value = compose.setting("FL_BUILD_EXTRA_CA", "./ca/no-extra-ca.pem")
    path = (paths.ROOT / value).resolve()
    if not path.is_file():
        raise FedopsError(f"FL_BUILD_EXTRA_CA points at {path}, which does not exist",
                          "set it to a PEM bundle (public roots plus your proxy's CA) in .env.local, "
                          "or remove it to build without one")
    return path


def buildable(profiles=(), model: dict | None = None) -> dict[str, str]:
    if model is None:
        from .stack import model as compose_model
        model = compose_model(profiles)
    # Several services may share an image (one SuperNode image for every site): build it
    # once, through the first service that uses it. Returns {service: image}.
    first: dict[str, str] = {}
    for name, svc in sorted(model["services"].items()):
        if "build" in svc:
            first.setdefault(svc.get("image", name), name)
    return {name: image for image, name in sorted(first.items(), key=lambda kv: kv[1])}


def label(image: str) -> str:
    """flfed/supernode:0.1.0 -> supernode"""
    return image.rsplit("/", 1)[-1].split(":", 1)[0]


def _ignore_rules(context: Path):
    """The context's .dockerignore as the Docker SDK's own matcher (Docker's rules: `*`
    within one path segment, `**` across any, a pattern also covers what is below a
    folder it matches, the last matching line decides, `!` lets a path back in)."""
    from docker.utils.build import PatternMatcher
    path = context / ".dockerignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    return PatternMatcher([line.strip() for line in lines if line.strip() and not line.strip().startswith("#")])


def _ignored(rel: str, rules) -> bool:
    return rel == ".dockerignore" or rules.matches(rel)    # its rules count, not the file


def context_files(context: Path) -> list[Path]:
    """The files of a build context that reach the builder: .dockerignore and IGNORED
    left out (folders nothing could let back in are not even walked)."""
    rules = _ignore_rules(context)
    exceptions = [p.cleaned_pattern for p in rules.patterns if p.exclusion]
    out = []
    for folder, dirs, files in os.walk(context):
        rel_dir = os.path.relpath(folder, context)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirs[:] = sorted(d for d in dirs if d not in IGNORED and not (
            _ignored(rel_dir + d, rules)
            and not any(e.startswith(rel_dir + d + "/") or "*" in e for e in exceptions)))
        out += [Path(folder) / f for f in files
                if not _ignored(rel_dir + f, rules) and f not in IGNORED]
    return sorted(out)


def inputs_digest(spec: dict, extra_ca_file: Path, base_image_id: str) -> str:
    """What an image is built from: its build section (context, Dockerfile, arguments),
    every file of its context (.dockerignore and IGNORED left out), the extra CA handed
    to the build and the base image's id. The same digest means the same image."""
    h = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    context = Path(spec["context"])
    for f in context_files(context):
        h.update(str(f.relative_to(context)).encode() + b"\0" + f.read_bytes() + b"\0")
    h.update(extra_ca_file.read_bytes() if extra_ca_file.is_file() else b"")
    h.update(base_image_id.encode())
    return h.hexdigest()


def image_id(ref: str) -> str:
    try:
        return engine.client().images.get(ref).id
    except Exception:   # docker.errors.ImageNotFound: not built yet
        return ""


def built_record() -> Path:
    return paths.BUILD_DIR / "images.json"


# Images built with the stack but never started by Compose: the notebook servers' image
# (started by JupyterHub through the Docker API proxy).
BUILD_ONLY_PROFILES = ("notebook",)


def build(c, services: list[str] | None = None, profiles=(), no_cache: bool = False,
          model: dict | None = None) -> None:
    """Build the images whose inputs changed since their last build here (all of them
    with no_cache); an image whose inputs are as they were is not handed to the
    builder at all, so an unchanged `up` costs no build calls. `model`: the Compose
    model read with these profiles or more, if the caller has it."""
    ca_file = extra_ca()
    profiles = tuple(dict.fromkeys((*profiles, *BUILD_ONLY_PROFILES)))
    from . import stack
    # read once: the images and their build sections
    model = stack.model(profiles, within=model)
    known = buildable(profiles, model)
    specs = model["services"]
    by_label = {label(image): name for name, image in known.items()}
    names = [by_label.get(s, s) for s in services] if services else list(known)
    unknown = [s for s in names if s not in known]
    if unknown:
        raise FedopsError(f"no buildable service named {', '.join(unknown)}",
                          f"choose from: {', '.join(sorted(by_label))}")
    # One image per service: build each once, in order, so progress reads per service.
    shown = {n: label(known[n]) for n in names}
    print(f"==> images: {', '.join(shown.values())}", flush=True)
    record = json.loads(built_record().read_text()) if built_record().is_file() else {}
    base_ids: dict[str, str] = {}
    for i, name in enumerate(names, 1):
        t0 = time.time()
        spec = specs[name]["build"]
        base = spec.get("args", {}).get("BASE_IMAGE", "")
        if base not in base_ids:
            base_ids[base] = image_id(base) if base else ""
        digest = inputs_digest(spec, ca_file, base_ids[base])
        ref = known[name]
        if not no_cache and record.get(ref, {}).get("inputs") == digest and \
                record[ref].get("id") and record[ref]["id"] == image_id(ref):
            print(f"    [{i}/{len(names)}] {shown[name]}: unchanged since its last build", flush=True)
            continue
        print(f"    [{i}/{len(names)}] {shown[name]} ...", flush=True)
        args = ["build", "--progress", "plain"] + (["--no-cache"] if no_cache else []) + [name]
        result = compose.run(c, *args, profiles=profiles, echo=False, hide=True, warn=True)
        if not result.ok:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-25:])
            raise FedopsError(f"building {name} failed:\n{tail}",
                              "behind a TLS-intercepting proxy set FL_BUILD_EXTRA_CA (README: Behind a proxy); "
                              f"full log: `invoke images.build --service {name}`")
        record[ref] = {"inputs": digest, "id": image_id(ref)}
        built_record().parent.mkdir(parents=True, exist_ok=True)
        built_record().write_text(json.dumps(record, indent=1, sort_keys=True))
        cached = (result.stdout + result.stderr).count("CACHED")
        print(f"          done in {time.time() - t0:.0f}s ({cached} cached steps)", flush=True)
