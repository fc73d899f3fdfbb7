"""Nothing is lost on `invoke down` + `invoke up` (runs last: it restarts the stack)."""
from test_postgres import connect


def test_data_survives_down_and_up(stack):
    with connect(stack, "flower") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS persistence_probe (id serial primary key, note text)")
        conn.execute("INSERT INTO persistence_probe (note) VALUES ('before restart')")
        count = conn.execute("SELECT count(*) FROM persistence_probe").fetchone()[0]
    stack.invoke("down")
    assert stack.compose("ps", "-q").stdout.strip() == ""
    stack.invoke("up", "--no-build")
    with connect(stack, "flower") as conn:
        after = conn.execute("SELECT count(*) FROM persistence_probe").fetchone()[0]
    assert after == count
