"""invoke bench, bring-up: reading `invoke up`'s progress and finding the slowest chain."""
from fedops import bringup as graph
from fedops.bench import bringup

UP = """==> bring-up: 4 services, each as soon as what it needs is ready
    [3.1 database] postgres: started
    [4.1 SuperLink] superlink: started
    [3.1 database] postgres: ready after 5.2s (at 5.9s)
    [4.1 SuperLink] superlink: ready after 19.0s (at 19.4s)
    [3.2 identity] keycloak: started
    [3.2 identity] keycloak: ready after 16.5s (at 22.6s)
    [3.3 edge] nginx: ready after 1.1s (at 23.9s)
    all 4 services ready in 24.0s
"""


def nodes():
    model = {"services": {
        "postgres": {"labels": {"fl.phase": "3.1 database"}},
        "keycloak": {"depends_on": {"postgres": {}}, "labels": {"fl.phase": "3.2 identity"}},
        "nginx": {"depends_on": {"keycloak": {}}, "labels": {"fl.phase": "3.3 edge"}},
        "superlink": {"labels": {"fl.phase": "4.1 SuperLink"}},
    }}
    return graph.graph(model)


def test_own_times_are_read_from_the_ready_lines():
    assert bringup.own_times(UP) == {"postgres": 5.2, "superlink": 19.0, "keycloak": 16.5, "nginx": 1.1}


def test_the_slowest_chain_adds_its_services_own_times():
    chain, own = bringup.slowest_chain(nodes(), bringup.own_times(UP))
    assert chain == ["postgres", "keycloak", "nginx"] and round(own, 1) == 22.8   # not superlink's 19.0


def test_the_one_line_change_goes_into_the_service_folder():
    path = bringup.one_line_change(bringup.CHANGED_SERVICE)
    assert path.parent.name == bringup.CHANGED_SERVICE and path.is_file()
