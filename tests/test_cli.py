"""The `kernelens` command: version, list, run (several names, merging), checks before work."""

from __future__ import annotations

import json

import pytest

from kernelens import __version__, cli
from kernelens.experiments import Result, Table
from kernelens.experiments import registry as reg
from kernelens.report import run_entries


def _result(name: str) -> Result:
    return Result(name=name, title=name.title(), tables=[Table("t", ["a"], [[1.0]])])


@pytest.fixture
def toy_registry(monkeypatch):
    """A registry of four experiments; ``calls`` records which ones ran."""
    calls: list[str] = []
    monkeypatch.setattr(reg, "_REGISTRY", {})
    monkeypatch.setattr(reg, "_UNAVAILABLE", {})
    monkeypatch.setattr(reg, "_loaded", True)

    def make(name):
        def fn(quick: bool) -> Result:
            calls.append(name)
            return _result(name)

        return fn

    reg.register("alpha", title="Alpha", area="kernels", full_minutes=3)(make("alpha"))
    reg.register("beta", title="Beta", area="rfm")(make("beta"))
    reg.register("needs_extra", title="Needs", area="rfm", requires=("kernelens_no_such_package",))(
        make("needs_extra")
    )

    def boom(quick: bool) -> Result:
        raise RuntimeError("experiment exploded")

    reg.register("boom", title="Boom", area="kernels")(boom)
    return calls


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"kernelens {__version__}"


def test_list_names_missing_extras(toy_registry, capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "beta" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("needs_extra"))
    assert "needs kernelens[experiments]: kernelens_no_such_package not installed" in line


def test_run_several_names_merges_and_prints_as_it_goes(toy_registry, tmp_path, capsys):
    out = str(tmp_path / "rep")
    assert cli.main(["run", "alpha", "--quick", "--out", out]) == 0
    assert cli.main(["run", "beta", "alpha", "--quick", "--out", out]) == 0
    text = capsys.readouterr().out
    assert toy_registry == ["alpha", "beta", "alpha"]
    lines = [ln.split()[0] for ln in text.splitlines() if " ok " in ln]
    assert lines == ["alpha", "beta", "alpha"]
    data = json.loads((tmp_path / "rep" / "results.json").read_text())
    assert [e["name"] for e in data["entries"]] == ["alpha", "beta"]
    html = (tmp_path / "rep" / "index.html").read_text()
    assert 'href="#exp-alpha"' in html and 'href="#exp-beta"' in html


def test_bad_input_is_refused_before_any_work(toy_registry, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert cli.main(["run", "alpha", "--quick", "--out", str(tmp_path / "f")]) == 2
    assert "--out" in capsys.readouterr().err
    assert cli.main(["run", "alpha", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown experiment 'nope'" in capsys.readouterr().err
    assert cli.main(["run", "needs_extra", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert 'pip install "kernelens[experiments]"' in err and "kernelens_no_such_package" in err
    assert toy_registry == []


def test_report_skips_missing_extras_and_reports_failures(toy_registry, tmp_path, capsys):
    assert cli.main(["report", "--quick", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "skipped experiment 'needs_extra'" in captured.err
    assert "1 experiment(s) failed: boom" in captured.err
    assert toy_registry == ["alpha", "beta"]


def test_full_mode_says_how_long_first(toy_registry, tmp_path, capsys):
    assert cli.main(["run", "alpha", "beta", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("alpha: full mode; roughly 3 min on 2 CPU cores (estimated")
    assert out[1].startswith("beta: full mode; no estimate recorded")
    assert cli.main(["run", "alpha", "--out", str(tmp_path)]) == 0
    assert "the last full run in this --out took" in capsys.readouterr().out


def test_runner_keeps_going(toy_registry):
    seen = []
    entries = run_entries(["alpha", "boom", "needs_extra"], quick=True, on_done=seen.append)
    assert [e.name for e in entries] == [e.name for e in seen] == ["alpha", "boom", "needs_extra"]
    assert entries[0].result.quick and "experiment exploded" in entries[1].error
    assert "pip install" in entries[2].error


def test_real_registry_lists_without_crashing(capsys):
    assert cli.main(["list"]) == 0
    names = [ln.split()[0] for ln in capsys.readouterr().out.splitlines()]
    assert "kernel_baselines" in names and "rfm_text" in names
    assert reg.get_experiment("rfm_text").requires == ("sacrebleu",)
    assert reg.get_experiment("sparse_dqn").requires == ("gymnasium",)


def test_module_importing_an_optional_package_at_top_level_is_reported(monkeypatch, capsys):
    monkeypatch.setattr(reg, "_REGISTRY", {})
    monkeypatch.setattr(reg, "_UNAVAILABLE", {})
    monkeypatch.setattr(reg, "_loaded", False)
    monkeypatch.setattr(reg, "_experiment_modules", lambda: ["kernelens.experiments.fake.qec"])

    def fake_import(name):
        raise ModuleNotFoundError("No module named 'stim'", name="stim")

    monkeypatch.setattr(reg.importlib, "import_module", fake_import)
    assert cli.main(["list"]) == 0
    assert "kernelens.experiments.fake.qec not loaded: needs stim" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r'pip install "kernelens\[experiments\]"'):
        reg.get_experiment("qec_decoding")
    monkeypatch.setattr(reg, "_loaded", False)

    def broken_import(name):
        raise ModuleNotFoundError("No module named 'typo'", name="typo")

    monkeypatch.setattr(reg.importlib, "import_module", broken_import)
    with pytest.raises(ModuleNotFoundError, match="typo"):
        reg.list_experiments()
