"""The commands' help reads as written: no docstring joins lines by accident,
`make_dataset.py --help` shows examples and the view-count range, and its
storage flag is the job's. Fast: nothing here starts Ray or imports TensorFlow."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest

from conftest import REPO

COMMANDS = sorted((REPO / "jobs").glob("*.py"))


def docstring_source(path) -> str:
    """The module docstring as written in the file, quotes and prefix included."""
    source = path.read_text()
    body = ast.parse(source).body
    if not body or not isinstance(getattr(body[0], "value", None), ast.Constant):
        return ""
    return ast.get_source_segment(source, body[0].value) or ""


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: p.name)
def test_no_docstring_joins_lines_by_accident(path):
    """A backslash at a line's end inside a plain (not raw) string joins that line
    and the next, leaving a gap in --help where a shell continuation was meant."""
    literal = docstring_source(path)
    if literal[:1] in ("r", "R"):
        return
    joined = [n for n, line in enumerate(literal.splitlines(), 1) if re.search(r"(?<!\\)\\$", line)]
    assert not joined, f"{path.name}: docstring line(s) {joined} end in a lone backslash"


def test_the_checker_sees_a_joined_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('"""Run:\n\n    python x.py --a \\\n        --b\n"""\n')
    assert re.search(r"\S {4,}--b", ast.get_docstring(ast.parse(bad.read_text()), clean=False))
    with pytest.raises(AssertionError, match="lone backslash"):
        test_no_docstring_joins_lines_by_accident(bad)


def test_evaluate_examples_are_whole_commands():
    doc = ast.get_docstring(ast.parse((REPO / "jobs" / "evaluate.py").read_text()))
    examples = re.findall(r"^    (python jobs/evaluate\.py .*(?:\\\n.*)?)$", doc, re.MULTILINE)
    assert len(examples) == 2
    for example in examples:
        assert "[" not in example and "  " not in example.replace("\\\n", " ").strip()


def run_make_dataset(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "jobs" / "make_dataset.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_dataset_help_has_examples_views_range_and_the_jobs_storage_flag():
    result = run_make_dataset("--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "python jobs/make_dataset.py --output /tmp/ds --objects 650" in text
    assert "--views 1,8" in text and "--views N|LOW,HIGH" in text
    assert "--storage-options JSON" in text  # as in `jobs/reconstruct.py --help`
    assert "categories: airplane" in text
    for line in text.splitlines():
        assert not re.search(r"\S {4,}\S", line) or line.startswith("  -"), line


@pytest.mark.parametrize(
    "views,message",
    [
        ("1,x", "expected N or LOW,HIGH"),
        ("1,2,3", "expected N or LOW,HIGH"),
        ("4,2", "LOW <= HIGH, got 4,2"),
        ("0,3", "positive count"),
    ],
)
def test_make_dataset_refuses_bad_view_counts(tmp_path, views, message):
    out = tmp_path / "ds"
    result = run_make_dataset(
        "--output", str(out), "--objects", "2", "--seed", "0", "--views", views
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
