"""Services built FROM a vendor's image (fedops/vendor.py): `invoke up` enables profile
grafana only when Grafana's base image is on the engine or pullable, else says so in one
line and carries on. The decision is checked against what the engine would answer
(present, pullable, neither) and the committed Compose files' merged model (`docker
compose config`: the docker CLI and its Compose plugin, no engine)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from fedops import compose, config, paths, render, services, vendor

GRAFANA = "grafana/grafana:12.4.11"


def nothing_pulls(ref: str) -> str:
    return "the registry cannot be reached: no such host"


def never_asked(ref: str):
    raise AssertionError(f"the registry was asked about {ref}, which is on the engine")


# ------------------------------------------------------------------ the decision
def test_an_image_on_the_engine_enables_the_profile_without_asking_a_registry():
    d = vendor.decide("grafana", False, [GRAFANA], present=lambda ref: ref == GRAFANA, pull_error=never_asked)
    assert (d.enabled, d.why, d.line) == (True, "present", "")


def test_a_pullable_image_enables_the_profile():
    asked = []
    d = vendor.decide("grafana", False, [GRAFANA], present=lambda ref: False,
                      pull_error=lambda ref: asked.append(ref))
    assert (d.enabled, d.why, asked) == (True, "pullable", [GRAFANA])


def test_no_image_and_no_registry_leaves_the_profile_out_with_one_line():
    d = vendor.decide("grafana", False, [GRAFANA], present=lambda ref: False, pull_error=nothing_pulls)
    assert (d.enabled, d.why) == (False, "missing")
    assert "\n" not in d.line
    assert d.line.startswith("grafana: left out:")
    assert GRAFANA in d.line and "no such host" in d.line                # what is missing, and why
    assert 'services/grafana/README.md, section "Getting the image"' in d.line
    readme = (paths.SERVICES_DIR / "grafana" / "README.md").read_text()
    assert "\n## Getting the image\n" in readme                          # the section it names exists


def test_asking_for_the_profile_forces_it():
    d = vendor.decide("grafana", True, [GRAFANA], present=lambda ref: False, pull_error=nothing_pulls)
    assert (d.enabled, d.why, d.line) == (True, "requested", "")


def test_a_registry_refusal_is_remembered_for_a_day(tmp_path):
    asked = []
    answers = {"img:1": "no such host", "img:2": None}

    def ask(image):
        asked.append(image)
        return answers[image]
    clock = [1000.0]
    pull_error = vendor.remembered(ask, tmp_path / "vendor-images.json", now=lambda: clock[0])
    assert pull_error("img:1") == "no such host"
    assert "no such host" in pull_error("img:1") and asked == ["img:1"]     # not asked again
    assert pull_error("img:2") is None and pull_error("img:2") is None
    assert asked == ["img:1", "img:2", "img:2"]                            # pullable: always asked
    clock[0] += vendor.RECHECK_AFTER + 1
    answers["img:1"] = None
    assert pull_error("img:1") is None and asked[-1] == "img:1"            # a day later: asked again
    assert json.loads((tmp_path / "vendor-images.json").read_text()) == {}


def test_every_base_image_must_be_had():
    other = "vendor/other:1"
    d = vendor.decide("grafana", False, [GRAFANA, other, GRAFANA], present=lambda ref: ref == GRAFANA,
                      pull_error=lambda ref: "denied" if ref == other else None)
    assert not d.enabled and other in d.line and d.images == (GRAFANA, other)


# ------------------------------------------------------------------ on the Compose model
def _compose_available() -> bool:
    return bool(shutil.which("docker")) and \
        subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


needs_compose = pytest.mark.skipif(not _compose_available(), reason="needs the docker CLI with the Compose v2 plugin")


def merged(folder, profiles, env: dict | None = None) -> dict:
    """The merged Compose model of the committed files for the committed federation,
    rendered into `folder` as the instance (as `invoke up` renders build/)."""
    fed = config.parse(yaml.safe_load(paths.CONFIG.read_text()))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(paths.INSTANCE_ENV, str(folder))
        for key, value in (env or {}).items():
            mp.setenv(key, value)
        render.render_all(fed)
        out = subprocess.run([*compose.argv(profiles), "config", "--format", "json"], capture_output=True,
                             text=True, env=compose.environment())
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@needs_compose
def test_grafana_is_in_its_profile_only(tmp_path):
    assert "grafana" not in merged(tmp_path / "plain", [])["services"]
    model = merged(tmp_path / "grafana", ["grafana"])
    assert model["services"]["grafana"]["profiles"] == ["grafana"]
    assert vendor.base_images(model, "grafana") == {"grafana": GRAFANA}


@needs_compose
def test_the_base_image_is_a_setting(tmp_path):
    mirror = "registry.example.org/mirror/grafana:12.4.11"
    model = merged(tmp_path, ["grafana"], env={"FL_GRAFANA_IMAGE": mirror})
    assert vendor.base_images(model, "grafana") == {"grafana": mirror}


@needs_compose
def test_resolve_adds_grafana_only_when_its_image_can_be_had(tmp_path):
    model = merged(tmp_path, ["gpu", "grafana"])
    on_engine = {GRAFANA}
    profiles, decisions = vendor.resolve(["gpu"], model=lambda p: model, present=on_engine.__contains__,
                                         pull_error=never_asked)
    assert profiles == ["gpu", "grafana"] and [d.why for d in decisions] == ["present"]
    profiles, decisions = vendor.resolve(["gpu"], model=lambda p: model, present=lambda ref: False,
                                         pull_error=nothing_pulls)
    assert profiles == ["gpu"] and len([d.line for d in decisions if d.line]) == 1
    profiles, _ = vendor.resolve(["grafana"], model=lambda p: model, present=lambda ref: False,
                                 pull_error=nothing_pulls)
    assert profiles == ["grafana"]


@needs_compose
def test_grafana_runs_like_the_other_monitoring_services(tmp_path):
    svc = merged(tmp_path, ["grafana"], env={"FL_HTTPS_PORT": "18443"})["services"]["grafana"]
    uid = services.by_name("grafana").uid
    assert svc["user"] == f"{uid}:{uid}" and svc["build"]["args"]["FL_UID"] == str(uid)
    assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    assert list(svc["networks"]) == ["fl-monitoring-network"]
    assert svc["labels"]["fl.phase"] == "5.2 monitoring"
    assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert {s["source"] for s in svc["secrets"]} == {"grafana_db_password", "grafana_admin_password",
                                                       "grafana_secret_key", "oidc_grafana_secret"}
    assert svc["healthcheck"]["test"][:2] == ["CMD", "curl"]
    assert "ports" not in svc                                  # only the edge publishes
    # the public URLs carry the published HTTPS port; the back channel is the edge's alias
    env = svc["environment"]
    assert env["FL_URL_GRAFANA"] == "https://grafana.fl.localhost:18443"
    assert env["FL_URL_AUTH"] == "https://auth.fl.localhost:18443"
    assert env["FL_HOST_AUTH"] == "auth.fl.localhost"
    mounts = {v["target"]: v for v in svc["volumes"]}
    assert mounts["/etc/fl/tls/ca.crt"]["read_only"] is True
    assert mounts["/var/lib/grafana"]["type"] == "volume"



@needs_compose
def test_every_value_grafana_expands_is_set_by_compose(tmp_path):
    """grafana.ini and the provisioning are read as is: each ${VAR} must be in the
    service's environment, each $__file{...} a mounted secret or the CA certificate
    (Grafana's expansion syntax: \\$(|__\\w+){...})."""
    svc = merged(tmp_path, ["grafana"])["services"]["grafana"]
    folder = paths.SERVICES_DIR / "grafana"
    sources = [folder / "grafana.ini", *sorted((folder / "provisioning").rglob("*.yml"))]
    # comments are not values: Grafana expands values only
    texts = ["\n".join(line for line in f.read_text().splitlines() if not line.lstrip().startswith((";", "#")))
             for f in sources]
    found = [m for text in texts for m in re.findall(r"\$(|__\w+)\{([^}]+)\}", text)]
    env_vars = {name for kind, name in found if kind == ""}
    files = {name for kind, name in found if kind == "__file"}
    assert {kind for kind, _ in found} <= {"", "__file"}
    assert env_vars == {"FL_URL_GRAFANA", "FL_URL_AUTH", "FL_HOST_AUTH", "FL_PROMETHEUS_SCRAPE_INTERVAL"}
    assert all(svc["environment"].get(v) for v in env_vars), svc["environment"]
    secrets = {s.get("target") or f"/run/secrets/{s['source']}" for s in svc["secrets"]}
    assert files == secrets                          # every secret is used, none is missing
    assert "/etc/fl/tls/ca.crt" in {v["target"] for v in svc["volumes"]}
