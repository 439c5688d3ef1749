"""vislearn.course.exercises: one-line feedback, hint then reason, hidden solutions, instructor mode."""

from __future__ import annotations

import math

import pytest

from vislearn.config import ParameterError
from vislearn.course import exercises as ex


@pytest.fixture(autouse=True)
def learner_mode(monkeypatch):
    monkeypatch.delenv(ex.SOLUTIONS_ENV, raising=False)


def add_entropy():
    return ex.add("t.entropy", check=lambda a: abs(a - math.log(8)) < 1e-6, hint="p = 1/8 eight times",
                  reason="-sum (1/K) log(1/K) = log K", solution="answer = math.log(K)")


def test_right_answer_is_one_line_and_true(capsys):
    add_entropy()
    assert ex.check("t.entropy", math.log(8)) is True
    assert capsys.readouterr().out == "✓ t.entropy: right.\n"


def test_first_miss_gives_the_hint_then_the_reason(capsys):
    add_entropy()
    assert ex.check("t.entropy", 3.0) is False
    first = capsys.readouterr().out
    assert "not yet" in first and "hint: p = 1/8 eight times" in first and "why" not in first
    assert ex.check("t.entropy", 2.0) is False
    second = capsys.readouterr().out
    assert "why: -sum (1/K) log(1/K) = log K" in second and "hint" not in second
    add_entropy()                                                   # re-running the cell starts over
    ex.check("t.entropy", 2.0)
    assert "hint:" in capsys.readouterr().out


def test_an_answer_of_the_wrong_kind_is_a_miss_not_a_crash(capsys):
    add_entropy()
    assert ex.check("t.entropy", "log 8") is False
    assert "checking it raised TypeError" in capsys.readouterr().out


def test_coding_exercise_checks_a_function_on_unseen_inputs(capsys):
    hidden = [0, 1, 7, 12]
    ex.add("t.square", check=lambda f: all(f(x) == x * x for x in hidden), hint="x times x",
           reason="the square of x", solution="def answer(x):\n    return x * x")
    assert ex.check("t.square", lambda x: x * x) is True
    assert ex.check("t.square", lambda x: 2 * x) is False          # right on 0 and... not on 7


def test_solution_is_hidden_until_asked_and_unknown_names_are_listed(capsys):
    add_entropy()
    assert ex.solution("t.entropy") == "answer = math.log(K)"
    assert "answer = math.log(K)" in capsys.readouterr().out
    with pytest.raises(ParameterError, match="no exercise named 't.nope'; known: .*t.entropy"):
        ex.check("t.nope", 1)
    with pytest.raises(ParameterError, match="hint must be a non-empty string"):
        ex.add("t.bad", check=bool, hint="", reason="r", solution="answer = 1")


def test_instructor_mode_runs_the_solution_and_a_failing_check_raises(monkeypatch, capsys):
    add_entropy()
    namespace = {"math": math, "K": 8}
    assert ex.solve("t.entropy", namespace, answer=1.0) == 1.0        # learner mode: the learner's answer
    monkeypatch.setenv(ex.SOLUTIONS_ENV, "1")
    assert ex.instructor_mode()
    answer = ex.solve("t.entropy", namespace, answer=1.0)              # instructor mode: the solution's
    assert answer == pytest.approx(math.log(8)) and "answer" not in namespace   # the namespace is untouched
    assert ex.check("t.entropy", answer) is True
    with pytest.raises(AssertionError, match="did not pass its own check"):
        ex.check("t.entropy", 1.0)
    ex.add("t.silent", check=bool, hint="h", reason="r", solution="x = 1")
    with pytest.raises(ParameterError, match="must set `answer`"):
        ex.solve("t.silent", namespace)
