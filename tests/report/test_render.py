"""Report rendering: the JSON, HTML and Markdown writers, merging runs, quick-mode clean-ups."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from kernelens.experiments import Claim, Result, Table, list_experiments, seed_std
from kernelens.report import ReportEntry, check_out_dir, write_report
from kernelens.report.format import MIN_TEXT_PX, PAGE_WIDTH_PX, one_point_table


def _result(name="toy", *, quick=True, verdict="reproduced") -> Result:
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    ax.set_xlabel("x")
    return Result(
        name=name,
        title=f"A {name} result",
        summary="It <works>.",
        tables=[
            Table("numbers", ["a", "b"], [[1, 0.5], ["x", 1e-7]]),
            Table("numbers again", ["a", "b"], [[1, 0.5], ["x", 1e-7]]),
            Table("spread", ["model", "mean", "std"], [["one seed", 0.25, seed_std([0.25])]]),
        ],
        figures=[("a line", fig)],
        metrics={"score": 0.25, "hidden": 0.125},
        claims=[Claim("lines go down", "slope -1", verdict, source="doc 000, fig. 1")],
        quick=quick,
    )


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.imgs: list[dict[str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        if tag == "img":
            self.imgs.append(a)


def _parse(page: str) -> _Links:
    p = _Links()
    p.feed(page)
    return p


def test_write_report_sections_links_and_files(tmp_path):
    entries = [
        ReportEntry("toy", "A toy result", "kernels", 0.1, result=_result()),
        ReportEntry("broken", "Broken", "kernels", 0.0, error="Traceback: boom"),
    ]
    path = write_report(entries, tmp_path)
    page = path.read_text()
    assert "data:image/png;base64," in page
    assert "It &lt;works&gt;." in page and "Traceback: boom" in page and "FAILED" in page
    links = _parse(page)
    internal = [h[1:] for h in links.hrefs if h.startswith("#")]
    assert {"provenance", "overview", "exp-toy", "exp-broken"} <= set(internal)
    assert all(i in links.ids for i in internal), set(internal) - links.ids
    files = [h for h in links.hrefs if not h.startswith("#")]
    assert files == ["figures/toy_0.png"] and (tmp_path / files[0]).stat().st_size > 1000
    for key in ("kernelens", "commit", "torch", "threads", "date", "machine"):
        assert f"<td>{key}</td>" in page
    assert page.index("thread(s) ·") < page.index('id="contents"')  # one line at the very top
    # quick mode: never a verdict; a single seed's std is "-"; a repeated table appears once
    assert "inconclusive (quick mode)" in page and ">reproduced<" not in page
    assert '<td>one seed</td><td class="num">0.25</td><td class="num">-</td>' in page
    assert page.count("numbers again") == 0 and page.count("<h4>numbers</h4>") == 1
    # metrics already in a table are not repeated; the others are
    assert "<td>hidden</td>" in page and "<td>score</td>" not in page
    md = (tmp_path / "index.md").read_text()
    assert "[![a line](figures/toy_0.png)](figures/toy_0.png)" in md and "| x | 1.000e-07 |" in md
    assert "- [A toy result](#exp-toy)" in md and '<a id="exp-toy"></a>' in md
    assert "| one seed | 0.25 | - |" in md
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["format"] == "kernelens-report" and data["version"] == 1
    assert data["entries"][0]["metrics"] == {"score": 0.25, "hidden": 0.125}
    assert data["entries"][0]["tables"][1]["rows"] == [["one seed", 0.25, None]]
    assert data["entries"][1]["error"] == "Traceback: boom"
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]


def test_full_mode_verdicts_and_not_reproduced_section(tmp_path):
    entries = [
        ReportEntry("good", "Good", "rfm", 1.0, result=_result("good", quick=False), quick=False),
        ReportEntry(
            "bad",
            "Bad",
            "rfm",
            1.0,
            result=_result("bad", quick=False, verdict="not reproduced"),
            quick=False,
        ),
    ]
    page = write_report(entries, tmp_path).read_text()
    assert '<span class="verdict-reproduced">reproduced</span>' in page
    assert 'id="not-reproduced"' in page and "Claims we could not reproduce" in page
    section = page.split('id="not-reproduced"')[1].split("<h2")[0]
    assert "#exp-bad" in section and "#exp-good" not in section
    assert "## Claims we could not reproduce" in (tmp_path / "index.md").read_text()


def test_runs_merge_by_name(tmp_path):
    write_report([ReportEntry("a_b", "AB", "rfm", 1.0, result=_result("a_b"))], tmp_path)
    write_report([ReportEntry("a", "A", "rfm", 1.0, result=_result("a"))], tmp_path)
    write_report([ReportEntry("b", "B", "rfm", 2.0, result=_result("b"))], tmp_path)
    write_report([ReportEntry("a", "A", "rfm", 3.0, error="now broken")], tmp_path)
    data = json.loads((tmp_path / "results.json").read_text())
    assert [(e["name"], e["seconds"]) for e in data["entries"]] == [
        ("a_b", 1.0),
        ("a", 3.0),
        ("b", 2.0),
    ]
    assert not (tmp_path / "figures" / "a_0.png").exists()  # its old figure went with it
    assert (tmp_path / "figures" / "a_b_0.png").exists()  # another experiment's did not
    page = (tmp_path / "index.html").read_text()
    assert "now broken" in page and page.count('<img alt="a line"') == 2  # a_b's and b's
    assert "#exp-a" in (tmp_path / "index.md").read_text()


def test_one_point_curves_become_table_rows():
    fig, (a1, a2) = plt.subplots(1, 2)
    a1.plot([600], [17.9], marker="o", label="bigram")
    a1.errorbar([600], [16.2], yerr=[0.1], capsize=3, label="trigram")
    a1.set_title("perplexity")
    a2.plot([600], [0.3], label="RFM")
    t = one_point_table("vs n", fig)
    assert t is not None and t.columns == ["panel", "curve", "x axis", "x", "y axis", "y"]
    assert [r[1] for r in t.rows] == ["bigram", "trigram", "RFM"] and t.rows[0][3] == 600.0
    fig2, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    assert one_point_table("real", fig2) is None
    fig3, ax = plt.subplots()
    ax.bar(["a"], [1.0])
    assert one_point_table("bars", fig3) is None


def test_wide_figures_keep_text_legible(tmp_path):
    fig, axes = plt.subplots(1, 5, figsize=(22, 4))
    for ax in axes:
        ax.plot([0, 1], [0, 1])
        ax.set_title("panel", fontsize=8)
    r = Result("wide", "Wide", figures=[("five panels", fig)])
    page = write_report([ReportEntry("wide", "Wide", "ntk", 0.1, result=r)], tmp_path).read_text()
    (img,) = _parse(page).imgs
    rec = json.loads((tmp_path / "results.json").read_text())["entries"][0]["figures"][0]
    width = int(img["width"])
    assert width == rec["display_width_px"] > PAGE_WIDTH_PX
    assert rec["min_font_px"] * width / rec["width_px"] >= MIN_TEXT_PX - 1e-9
    assert 'class="figscroll"' in page
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([0, 1], [0, 1])
    r = Result("small", "Small", figures=[("one panel", fig)])
    write_report([ReportEntry("small", "Small", "ntk", 0.1, result=r)], tmp_path)
    rec = json.loads((tmp_path / "results.json").read_text())["entries"][1]["figures"][0]
    # shown at its 100-dpi size (the PNG holds 1.5 file pixels per CSS pixel), text >= 10 px
    assert rec["display_width_px"] == -(-rec["width_px"] * 100 // 150)
    assert rec["min_font_px"] * rec["display_width_px"] / rec["width_px"] >= MIN_TEXT_PX


def test_out_dir_is_checked(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        check_out_dir(tmp_path / "file")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "results.json").write_text('{"something": 1}')
    with pytest.raises(ValueError, match="not a kernelens report"):
        check_out_dir(foreign)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "results.json").write_text('{"entries": [{"name": "old"}]}')
    write_report([ReportEntry("a", "A", "rfm", 1.0, result=_result("a"))], legacy)
    assert [e["name"] for e in json.loads((legacy / "results.json").read_text())["entries"]] == [
        "a"
    ]


def test_claim_verdict_is_checked():
    with pytest.raises(ValueError, match="verdict must be one of"):
        Claim("c", "ours", "probably")  # type: ignore[arg-type]


def test_table_rejects_ragged_rows():
    with pytest.raises(ValueError, match="row 0 has 1 values but there are 2 columns"):
        Table("t", ["a", "b"], [[1]])


def test_every_registered_experiment_has_unique_name_and_area():
    exps = list_experiments()
    assert len({e.name for e in exps}) == len(exps)
    assert all(e.area for e in exps)
    assert all(re.fullmatch(r"[a-z0-9_]+", e.name) for e in exps)
