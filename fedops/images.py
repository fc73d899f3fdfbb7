"""Building the service images (docker compose build: BuildKit caches per layer, so a
change in one services/<name>/ folder rebuilds only that image)."""
from __future__ import annotations

import time
from pathlib import Path

from . import compose, paths
from .errors import FedopsError


def extra_ca() -> Path:
    value = compose.setting("FL_BUILD_EXTRA_CA", "./ca/no-extra-ca.pem")
    path = (paths.ROOT / value).resolve()
    if not path.is_file():
        raise FedopsError(f"FL_BUILD_EXTRA_CA points at {path}, which does not exist",
                          "set it to a PEM bundle (public roots plus your proxy's CA) in .env.local, "
                          "or remove it to build without one")
    return path


def buildable(profiles=()) -> dict[str, str]:
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


# Images built with the stack but never started by Compose: the notebook servers' image
# (started by JupyterHub through the Docker API proxy).
BUILD_ONLY_PROFILES = ("notebook",)


def build(c, services: list[str] | None = None, profiles=(), no_cache: bool = False) -> None:
    extra_ca()
    profiles = tuple(dict.fromkeys((*profiles, *BUILD_ONLY_PROFILES)))
    known = buildable(profiles)
    by_label = {label(image): name for name, image in known.items()}
    names = [by_label.get(s, s) for s in services] if services else list(known)
    unknown = [s for s in names if s not in known]
    if unknown:
        raise FedopsError(f"no buildable service named {', '.join(unknown)}",
                          f"choose from: {', '.join(sorted(by_label))}")
    # One image per service: build each once, in order, so progress reads per service.
    shown = {n: label(known[n]) for n in names}
    print(f"==> images: {', '.join(shown.values())}", flush=True)
    for i, name in enumerate(names, 1):
        t0 = time.time()
        print(f"    [{i}/{len(names)}] {shown[name]} ...", flush=True)
        args = ["build", "--progress", "plain"] + (["--no-cache"] if no_cache else []) + [name]
        result = compose.run(c, *args, profiles=profiles, echo=False, hide=True, warn=True)
        if not result.ok:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-25:])
            raise FedopsError(f"building {name} failed:\n{tail}",
                              "behind a TLS-intercepting proxy set FL_BUILD_EXTRA_CA (README: Behind a proxy); "
                              f"full log: `invoke images.build --service {name}`")
        cached = (result.stdout + result.stderr).count("CACHED")
        print(f"          done in {time.time() - t0:.0f}s ({cached} cached steps)", flush=True)
