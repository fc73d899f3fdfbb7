"""fedops/runlog.py: the FL exporter's run-log parser, loaded by path, is what `invoke
fl.run` and the benchmark read logs with; fl.run's table of the rounds."""
from __future__ import annotations

from pathlib import Path

from fedops import federation, paths, runlog
from fedops.bench import stackrun

LOG = (paths.SERVICES_DIR / "fl-exporter" / "tests" / "digits-run.log").read_text()


def test_the_parser_is_the_exporters_file_and_fedops_keeps_no_copy():
    assert Path(runlog._module.__file__) == paths.SERVICES_DIR / "fl-exporter" / "flexporter" / "runlog.py"
    assert stackrun.REPLIES_RE is runlog.REPLIES_RE
    for name in ("ROUND_RE", "METRIC_RE", "ANSI_RE", "strip_ansi"):
        assert not hasattr(federation, name), name


def test_fl_runs_table_shows_the_server_side_evaluation_per_round():
    parsed = runlog.RunLog()
    for line in LOG.splitlines():           # as `flwr log --stream` prints it
        parsed.line(line)
    assert runlog.table(parsed) == [
        "round    accuracy        loss    (server evaluate)",
        "    1      0.8689      0.6140",
        "    2      0.8911      0.4904",
        "    3      0.9244      0.3741",
    ]
    assert runlog.table(parsed, "train")[1] == "    1      0.7899      0.7456"
    assert runlog.table(runlog.RunLog()) == []
