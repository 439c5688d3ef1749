"""vislearn.results: recorded results and the markdown tables notebooks show."""

import json

from vislearn.results import OUTPUT_DIR_ENV, Table, markdown_table, record


def test_markdown_table_escapes_pipes_and_newlines():
    text = markdown_table([{"KL(teacher || student)": 0.25, "note": "a|b\nc"}, {"extra": 1_000}])
    lines = text.splitlines()
    assert lines[0] == r"| KL(teacher \|\| student) | note | extra |"
    assert lines[2] == r"| 0.25 | a\|b c |  |" and lines[3] == "|  |  | 1,000 |"
    assert all(line.replace(r"\|", "").count("|") == 4 for line in lines)      # 3 columns on every row
    assert Table([{"a": 1}])._repr_markdown_() == "| a |\n|---|\n| 1 |"


def test_record_merges_into_the_run_folder(tmp_path, monkeypatch):
    assert record(a=1) == {"a": 1}                                           # by hand: nothing written
    monkeypatch.setenv(OUTPUT_DIR_ENV, str(tmp_path))
    record(a=1, x=float("nan"))
    assert record(b=2) == {"a": 1, "x": "nan", "b": 2}
    assert json.loads((tmp_path / "results.json").read_text()) == {"a": 1, "x": "nan", "b": 2}
