"""Report rendering and the CLI."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from kernelens import cli
from kernelens.experiments import Result, Table, list_experiments
from kernelens.experiments import registry as reg
from kernelens.report import ReportEntry, run_entries, write_report


def _result() -> Result:
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    return Result(
        name="toy",
        title="A toy result",
        summary="It <works>.",
        tables=[Table("numbers", ["a", "b"], [[1, 0.5], ["x", 1e-7]])],
        figures=[("a line", fig)],
        metrics={"score": 0.25},
    )


def test_write_report_is_self_contained(tmp_path):
    entries = [
        ReportEntry("toy", "A toy result", "kernels", 0.1, result=_result()),
        ReportEntry("broken", "Broken", "kernels", 0.0, error="Traceback: boom"),
    ]
    path = write_report(entries, tmp_path)
    page = path.read_text()
    assert "data:image/png;base64," in page
    assert "It &lt;works&gt;." in page and "Traceback: boom" in page and "FAILED" in page
    md = (tmp_path / "index.md").read_text()
    assert "![a line](figures/toy_0.png)" in md and "| x | 1.000e-07 |" in md
    assert (tmp_path / "figures" / "toy_0.png").stat().st_size > 1000
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["entries"][0]["metrics"] == {"score": 0.25}
    assert data["entries"][1]["error"] == "Traceback: boom"
    assert not list(tmp_path.glob("*.tmp"))


def test_table_rejects_ragged_rows():
    with pytest.raises(ValueError, match="row 0 has 1 values but there are 2 columns"):
        Table("t", ["a", "b"], [[1]])


@pytest.fixture
def toy_registry(monkeypatch):
    monkeypatch.setattr(reg, "_REGISTRY", {})
    monkeypatch.setattr(reg, "_loaded", True)
    reg.register("toy", title="Toy", area="kernels")(lambda quick: _result())

    def boom(quick: bool) -> Result:
        raise RuntimeError("experiment exploded")

    reg.register("boom", title="Boom", area="kernels")(boom)


def test_runner_keeps_going_and_cli_exit_codes(toy_registry, tmp_path, capsys):
    entries = run_entries(None, quick=True)
    assert [e.name for e in entries] == ["toy", "boom"]
    assert entries[0].result.quick and "experiment exploded" in entries[1].error
    assert cli.main(["list"]) == 0
    assert "toy" in capsys.readouterr().out
    assert cli.main(["run", "toy", "--quick", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "index.html").exists()
    assert cli.main(["report", "--quick", "--out", str(tmp_path)]) == 1
    assert cli.main(["run", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown experiment 'nope'" in capsys.readouterr().err


def test_every_registered_experiment_has_unique_name_and_area():
    exps = list_experiments()
    assert len({e.name for e in exps}) == len(exps)
    assert all(e.area for e in exps)
