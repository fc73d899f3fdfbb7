import pytest

from fedops import config
from fedops.errors import FedopsError


def test_committed_config_is_valid(fed):
    assert fed.domain == "fl.localhost"
    assert [o.name for o in fed.organisations] == ["alpha", "bravo", "charlie"]
    assert [o.partition_id for o in fed.organisations] == [0, 1, 2]
    assert fed.ca.cert_days <= config.MAX_LEAF_DAYS
    assert fed.hostname("auth") == "auth.fl.localhost"
    assert fed.hostname() == "fl.localhost"


def test_local_file_overrides_and_merges(tmp_path):
    base = tmp_path / "federation.yaml"
    base.write_text(config.paths.CONFIG.read_text())
    local = tmp_path / "federation.local.yaml"
    local.write_text("domain: fl.example.org\nca:\n  city: Townsville\norganisations: [{name: delta}]\nusers: []\n")
    fed = config.load(base, local)
    assert fed.domain == "fl.example.org"
    assert fed.ca.city == "Townsville" and fed.ca.country == "AU"   # merged, not replaced
    assert [o.name for o in fed.organisations] == ["delta"]          # lists replace


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["organisations"].append({"name": "Bad_Name"}), "organisation name 'Bad_Name' is not allowed"),
    (lambda r: r["organisations"].append({"name": "alpha"}), "listed twice"),
    (lambda r: r.update(organisations=[]), "at least one organisation"),
    (lambda r: r["users"][0].update(organisation="zulu"), "names organisation 'zulu'"),
    (lambda r: r["users"][0].update(groups=["admins"]), "unknown group"),
    (lambda r: r["ca"].update(country="Australia"), "two-letter ISO code"),
    (lambda r: r["ca"].update(cert_days=825), "from 1 to 366"),
    (lambda r: r["ca"].pop("common_name"), "'ca.common_name' is missing"),
    (lambda r: r.update(domain="localhost"), "at least two labels"),
    (lambda r: r.update(domain="bad_domain.org"), "not a DNS name"),
])
def test_bad_config_names_the_key_and_the_fix(raw, mutate, message):
    mutate(raw)
    with pytest.raises(FedopsError) as err:
        config.parse(raw)
    assert message in str(err.value)
    assert "->" in str(err.value)          # every error says what to do next


def test_invalid_yaml_is_reported_with_the_file(tmp_path):
    bad = tmp_path / "federation.yaml"
    bad.write_text("domain: [unclosed\n")
    with pytest.raises(FedopsError, match="not valid YAML"):
        config.load(bad, tmp_path / "none.yaml")


def test_unknown_organisation_lists_the_known_ones(fed):
    with pytest.raises(FedopsError) as err:
        fed.organisation("alfa")
    assert "known: alpha, bravo, charlie" in str(err.value)


def test_public_view_has_no_secrets(fed):
    public = fed.public()
    assert public["num_partitions"] == 3
    assert "password" not in str(public).lower()


# ---- notebooks.egress: what notebook servers may reach through the egress proxy -------

def test_notebook_egress_is_nothing_by_default_and_star_or_names_otherwise():
    from fedops.config import parse_egress, parse_notebooks
    assert parse_notebooks({}, "f.yaml").egress == ()
    assert parse_egress(["*"], "f.yaml") == ("*",) and parse_egress(True, "f.yaml") == ("*",)
    assert parse_egress([" Example.org", ".ac.uk", "example.org"], "f.yaml") == ("example.org", ".ac.uk")


@pytest.mark.parametrize("raw", [["*", "example.org"], ["http://example.org"], ["localhost"], "example.org", [3]])
def test_bad_notebook_egress_is_refused_with_what_to_write(raw):
    from fedops.config import parse_egress
    with pytest.raises(FedopsError) as exc:
        parse_egress(raw, "federation.local.yaml")
    assert "notebooks.egress" in exc.value.problem and "[\"*\"]" in exc.value.fix
