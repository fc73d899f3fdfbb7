"""fedops/bench: the report's sections spliced in place, the stack's memory by phase and
Prometheus' growth figures, the notebook section."""
from fedops.bench import footprint, notebooks
from fedops.bench.common import MIB
from fedops.bench.report import splice

REPORT = "# Benchmarks\n\nintro\n\n## Capacity\n\nold capacity\n\n## Old part\n\nold text\nmore\n\n## Notes\n\n- a\n"


def test_a_section_replaces_the_one_of_its_heading_and_nothing_else():
    out = splice(REPORT, ["", "## Old part", "", "new text"])
    assert "old text" not in out and "more" not in out and "new text" in out
    assert out.index("## Capacity") < out.index("## Old part") < out.index("## Notes")
    assert "old capacity" in out and "- a" in out and out.endswith("- a\n")


def test_a_new_section_goes_before_the_notes_or_at_the_end():
    out = splice(REPORT, ["", "## New part", "", "x"])
    assert out.index("## Old part") < out.index("## New part") < out.index("## Notes")
    out = splice("# B\n\n## A\n\na\n", ["", "## New part", "", "x"])
    assert out == "# B\n\n## A\n\na\n\n## New part\n\nx\n"


def test_splicing_twice_gives_the_same_report():
    once = splice(REPORT, ["", "## Old part", "", "new"])
    assert splice(once, ["", "## Old part", "", "new"]) == once


def test_a_prometheus_answer_gives_its_first_value_or_none():
    ok = '{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"42.5"]}]}}'
    assert footprint.parse_query(ok) == 42.5
    assert footprint.parse_query('{"status":"success","data":{"result":[]}}') is None
    assert footprint.parse_query("not json") is None


def fp() -> footprint.Footprint:
    return footprint.Footprint(containers=[
        {"name": "a", "service": "prometheus", "phase": "5.2 monitoring", "bytes": 300 * MIB},
        {"name": "b", "service": "node-exporter", "phase": "5.2 monitoring", "bytes": 100 * MIB},
        {"name": "c", "service": "keycloak", "phase": "3.2 identity", "bytes": 600 * MIB}],
        prometheus={"samples_per_s": 100.0, "series": 3000.0, "targets": 20.0, "uptime_s": 7200.0},
        tsdb_bytes=50 * MIB)


def test_memory_is_summed_by_phase_and_monitoring_is_a_share_of_the_stack():
    f = fp()
    assert f.by_phase() == {"3.2 identity": 600 * MIB, "5.2 monitoring": 400 * MIB}
    assert f.share("5.2 monitoring") == 0.4
    text = "\n".join(footprint.render(f))
    assert "| 5.2 monitoring | 2 | 400 | 40% |" in text
    assert "prometheus 300 MiB, node-exporter 100 MiB" in text


def test_tsdb_growth_per_day_follows_the_ingestion_rate():
    low, high = fp().per_day()
    assert low == 100 * 86400 * 1 and high == 100 * 86400 * 2
    text = "\n".join(footprint.render(fp()))
    assert "| TSDB growth per day, compacted | 8-16 MiB" in text
    assert "after 2.0 h running" in text and "102.4 KiB per series" in text


def test_nothing_measured_says_so():
    assert "Not measured" in "\n".join(footprint.render(footprint.Footprint(note="Prometheus was not running")))
    assert "Not measured" in "\n".join(notebooks.render(None))


def test_the_notebook_section_gives_medians_and_whether_all_servers_ran():
    n = notebooks.NotebookFigures(sign_in=[1.0, 1.2, 0.9], to_ready=[8.0, 9.5, 7.0], concurrent=20,
                                  concurrent_ready=19, concurrent_each=[10.0, 30.0, 20.0],
                                  server_memory=[100 * MIB, 120 * MIB, 110 * MIB], hub_memory=200 * MIB,
                                  note="a server did not start: x")
    text = "\n".join(notebooks.render(n))
    assert "median of 3 | 8.0 s (of which sign-in 1.0 s" in text
    assert "19 of 20 running, not all ready" in text and "slowest 30.0 s" in text
    assert "| an idle server (JupyterLab, no kernel) | 110 MiB" in text
    assert "Note: a server did not start: x." in text


def test_the_written_round_breakdown_replaces_its_section_whole():
    """`--only pairs` and `--only rounds` put round_breakdown.md's current text in place."""
    from fedops.bench.report import ROUND_BREAKDOWN, render_round_breakdown
    section = render_round_breakdown()
    heading = next(line for line in section if line.startswith("## "))
    stale = REPORT.replace("## Old part", heading)
    out = splice(stale, section)
    assert "old text" not in out and ROUND_BREAKDOWN.read_text().strip() in out
    assert "old capacity" in out and out.endswith("- a\n")
