"""A damaged metrics.json in the output folder: the report names it and carries on, never a traceback."""

import json
import os
import shutil

import pytest

from ksdp.experiments import __main__ as cli
from ksdp.experiments import checks, ipm_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = os.path.join(ROOT, "docs", "runs", "quick")  # the committed quick runs' metrics.json


def _set(path, change):
    with open(path) as f:
        m = json.load(f)
    with open(path, "w") as f:
        json.dump(change(m), f)


def _truncate(path):
    data = open(path).read()
    open(path, "w").write(data[: len(data) // 2])


def _drop_key(m):
    del m["rows"][0]["c2st"]
    return m


def _rows_text(m):
    m["rows"] = "none"
    return m


def _string_number(m):
    m["rows"][1]["m2_dp"] = "0.5"
    return m


DAMAGE = {
    "truncated": _truncate,
    "a list": lambda p: _set(p, lambda m: [m]),
    "rows a string": lambda p: _set(p, _rows_text),
    "a row without c2st": lambda p: _set(p, _drop_key),
    "a number as a string": lambda p: _set(p, _string_number),
    "settings a list": lambda p: _set(p, lambda m: {**m, "settings": [1]}),
    "not JSON": lambda p: open(p, "w").write("{{{"),
}


@pytest.mark.parametrize("label", DAMAGE)
def test_report_only_names_a_damaged_file_and_renders_the_others(tmp_path, label, capsys):
    out = tmp_path / "runs"
    shutil.copytree(RUNS, out / "quick")
    victim = out / "quick" / "laminar2d-time" / "metrics.json"
    DAMAGE[label](str(victim))
    with pytest.raises(checks.MetricsError, match="damaged") as err:
        checks.load_metrics(str(out / "quick"), "laminar2d-time")
    assert str(victim) in str(err.value) and "without --report-only" in str(err.value)
    # the CLI reports the failure (exit status 1), writes the report and the other experiments' pages
    assert cli.main(["--report-only", "--scale", "quick", "--out", str(out)]) == 1
    text = open(out / "quick" / "REPORT.md").read()
    assert "## laminar2d-time: FAILED" in text and "damaged" in text
    assert "## ks2d-time\n" in text and os.path.exists(out / "quick" / "ks2d-time" / "README.md")
    # a later run reads the damaged file's stage times without failing; where the file as a whole is
    # unreadable (or its settings are), it keeps none of them
    settings = ipm_data.data_settings(cli.EXPERIMENTS["laminar2d-time"], "quick", 0)
    timing = ipm_data.previous_timing(str(victim), settings)
    if label in ("truncated", "a list", "not JSON", "settings a list"):
        assert timing == ({}, {})


def test_absurd_sizes_are_refused_up_front(tmp_path, capsys):
    # J = 10^9: terabytes of positions; refused before anything runs, with the size it would need
    with pytest.raises(SystemExit) as err:
        cli.main(["--particles", "1000000000", "--out", str(tmp_path)])
    assert err.value.code == 2
    assert "GiB" in capsys.readouterr().err and not os.listdir(tmp_path)


@pytest.mark.parametrize("where", ["laminar2d-time/README.md", "REPORT.md"])
def test_a_folder_in_the_place_of_an_output_is_reported_without_a_traceback(tmp_path, where, capsys):
    # the CLI writes its pages and report over whatever is there; a folder in the way is named and left
    # alone, and the rest is written (the other pages; the report when only a page is blocked)
    out = tmp_path / "runs"
    shutil.copytree(RUNS, out / "quick")
    (out / "quick" / where / "kept").mkdir(parents=True)
    assert cli.main(["--report-only", "--scale", "quick", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert f"{out / 'quick' / where} is a folder" in captured.out
    assert (out / "quick" / where / "kept").is_dir()
    assert os.path.exists(out / "quick" / "ks2d-time" / "README.md")
    if where != "REPORT.md":
        assert "laminar2d-time: FAILED" in (out / "quick" / "REPORT.md").read_text()
