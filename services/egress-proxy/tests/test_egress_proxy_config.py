"""services/egress-proxy: the allow-list from FL_NOTEBOOKS_EGRESS becomes Squid's rules;
private destinations are refused whatever the list; bad entries are refused with a
message. (Squid itself parses the result at image build and at every start.)"""
from pathlib import Path

import pytest

from testcerts import load_entrypoint

SERVICE = Path(__file__).resolve().parents[1]


@pytest.fixture
def entry():
    return load_entrypoint(SERVICE / "entrypoint.py", "egress_entry")


def access_rules(conf: str) -> list[str]:
    return [line for line in conf.splitlines() if line.startswith("http_access")]


def test_nothing_is_allowed_by_default(entry):
    assert entry.allow_list("") == []
    assert access_rules(entry.render([]))[-1] == "http_access deny all"
    assert "http_access allow" not in entry.render([])


def test_a_star_allows_every_public_destination_after_the_private_ones_are_refused(entry):
    rules = access_rules(entry.render(entry.allow_list("*")))
    assert rules[0] == "http_access deny private_dst"
    assert rules.index("http_access deny CONNECT !https_port") < rules.index("http_access allow all")
    conf = entry.render(["*"])
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16"):
        assert net in conf.split("acl private_dst dst ")[1].splitlines()[0]


def test_a_list_allows_those_domains_only(entry):
    allowed = entry.allow_list(" Example.org, .ac.uk ")
    assert allowed == ["example.org", ".ac.uk"]
    conf = entry.render(allowed)
    assert "acl allowed_dst dstdomain example.org .ac.uk" in conf
    rules = access_rules(conf)
    assert rules[0] == "http_access deny private_dst" and rules[-2:] == [
        "http_access allow allowed_dst", "http_access deny all"]


@pytest.mark.parametrize("value", ["*,example.org", "http://example.org", "localhost", "exa mple.org", "-x.org"])
def test_bad_entries_are_refused_with_a_message(entry, value, capsys):
    with pytest.raises(SystemExit) as exc:
        entry.allow_list(value)
    assert exc.value.code == 2
    assert "FL_NOTEBOOKS_EGRESS" in capsys.readouterr().err


def test_nothing_is_cached_or_written_outside_tmp(entry):
    conf = entry.render([])
    assert "cache deny all" in conf and "cache_dir" not in conf
    assert "pid_filename /tmp/squid/squid.pid" in conf
    assert "access_log stdio:/dev/stdout !healthcheck" in conf
