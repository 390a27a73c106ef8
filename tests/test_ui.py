"""Progress written to a file (`ractd ... > log 2>&1`, `reproduce --jobs`'s logs): rich would draw a
bar there only once, at the end, cut to 80 columns, so a plain line is printed at every tenth of the
way and one at the end instead."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ractd_cli.cli import app


def test_a_bar_drawn_to_a_file_prints_a_line_at_every_tenth_and_at_the_end(_tmp_cache):
    pytest.importorskip("ractd_bimodal")
    r = CliRunner().invoke(app, ["fetch", "bimodal", "--source", "local", "--steps", "2000"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["train-teacher", "--env", "bimodal", "--preset", "tiny", "--steps", "200"])
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stderr.splitlines() if line.startswith("teacher-bimodal: ")]
    assert [line.split()[1] for line in lines] == [f"{k}/200" for k in range(20, 201, 20)]
    assert [line.split()[2] for line in lines] == [f"({k}%)," for k in range(10, 100, 10)] + ["(100%),"]
    assert lines[-1].split()[3] == "done,"
    assert all("elapsed  loss " in line for line in lines)  # the bar's fields come along
    assert "━" not in r.stderr  # no bar drawn by rich, cut to the file's 80 columns
