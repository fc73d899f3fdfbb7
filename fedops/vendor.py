"""Services built FROM a vendor's image that no Debian, PyPI or Maven source replaces.

Grafana is one: its Dockerfile starts from Grafana's own image, which a user's engine
pulls from Docker Hub but a machine without a container registry cannot get. Such a
service sits in a Compose profile of its own name (`profiles: [grafana]`), and
`invoke up` enables that profile only when the service's base image is on this engine
already or the engine's registry answers for it (then the build pulls it). Otherwise
the rest of the stack comes up without it, after ONE line naming the missing image and
the README section on how to get it. `invoke up --profile grafana` forces it (the
build then fails with the engine's own error if the image cannot be had).

The decision (`decide`) is a pure function of what the engine answers; `resolve` asks
the engine (fedops/engine.py) and the Compose model (fedops/stack.py).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

# profile -> where the README says how to get its image
OPTIONAL: dict[str, str] = {
    "grafana": 'services/grafana/README.md, section "Getting the image"',
}
PROFILES: tuple[str, ...] = tuple(OPTIONAL)


@dataclass(frozen=True)
class Decision:
    profile: str
    enabled: bool
    why: str                # requested, present, pullable, missing
    images: tuple[str, ...]
    line: str = ""          # what `invoke up` prints when the profile is left out


def base_images(model: dict, profile: str) -> dict[str, str]:
    """{service: its build's BASE_IMAGE} for the services of a profile in a merged
    Compose model (`docker compose config` with that profile enabled)."""
    out = {}
    for name, svc in sorted(model.get("services", {}).items()):
        if profile in (svc.get("profiles") or []):
            base = ((svc.get("build") or {}).get("args") or {}).get("BASE_IMAGE", "")
            if base:
                out[name] = base
    return out


def decide(profile: str, requested: bool, images: Iterable[str],
           present: Callable[[str], bool], pull_error: Callable[[str], str | None]) -> Decision:
    """Enable `profile` when asked for, or when every base image of its services is on
    the engine (`present`) or pullable (`pull_error` returns None; else the reason)."""
    images = tuple(dict.fromkeys(images))
    if requested:
        return Decision(profile, True, "requested", images)
    missing = [i for i in images if not present(i)]
    if not missing:
        return Decision(profile, True, "present", images)
    errors = {i: pull_error(i) for i in missing}
    unpullable = {i: e for i, e in errors.items() if e is not None}
    if not unpullable:
        return Decision(profile, True, "pullable", images)
    image, reason = next(iter(unpullable.items()))
    line = (f"{profile}: left out: its base image {image} is not on this engine and cannot be pulled "
            f"({reason}); how to get it: {OPTIONAL.get(profile, 'README.md')}")
    return Decision(profile, False, "missing", images, line)


def resolve(requested: Iterable[str], model: Callable[[list[str]], dict] | None = None,
            present: Callable[[str], bool] | None = None,
            pull_error: Callable[[str], str | None] | None = None) -> tuple[list[str], list[Decision]]:
    """The profiles `invoke up` runs with: those requested, plus each optional profile
    whose images can be had. Returns (profiles, decisions)."""
    from . import engine, paths, stack
    model = model or stack.model
    present = present or engine.image_present
    pull_error = pull_error or remembered(engine.pull_error, paths.BUILD_DIR / "vendor-images.json")
    requested = list(dict.fromkeys(requested))
    the_model = model([*requested, *PROFILES])     # one `docker compose config` for all of them
    profiles = list(requested)
    decisions = []
    for profile in PROFILES:
        d = decide(profile, profile in requested, base_images(the_model, profile).values(), present, pull_error)
        decisions.append(d)
        if d.enabled and profile not in profiles:
            profiles.append(profile)
    return profiles, decisions


# Asking a registry that cannot be reached takes the engine's time-out (20 s and more):
# a refusal is remembered for a day, so that every later `invoke up` is not slowed by it.
RECHECK_AFTER = 24 * 3600


def remembered(ask: Callable[[str], str | None], record: Path, now: Callable[[], float] = time.time,
               recheck_after: float = RECHECK_AFTER) -> Callable[[str], str | None]:
    """`ask` (an image -> why it cannot be pulled, or None) with its refusals kept in
    `record` for `recheck_after` seconds; an image that can be pulled is asked again."""
    def pull_error(image: str) -> str | None:
        try:
            seen = json.loads(record.read_text())
        except (OSError, ValueError):
            seen = {}
        entry = seen.get(image)
        if entry and now() - entry.get("checked", 0) < recheck_after:
            return f"{entry['error']}; checked {time.strftime('%Y-%m-%d %H:%M', time.localtime(entry['checked']))}, " \
                   f"asked again a day later or with --profile"
        error = ask(image)
        if error is None:
            seen.pop(image, None)
        else:
            seen[image] = {"error": error, "checked": now()}
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(seen, indent=1, sort_keys=True))
        return error
    return pull_error
