"""Exercises that check themselves, for learners and instructors.

A notebook's exercise cell computes an answer and calls ``check(name, answer)``. It prints one
friendly line: right, or not yet with a **hint** (first miss) and then the **reason** (later misses),
and returns whether the answer was right, so the notebook can go on either way. The solution stays
hidden until asked for: ``solution(name)`` prints it. In instructor mode (``VISLEARN_SOLUTIONS=1``,
e.g. under nbval in CI) ``solve(name, namespace)`` runs the solution instead of the learner's code and
``check`` raises when it fails, so the checks and their solutions are tested like the rest.

Exercises are registered in the notebook itself (next to the data they need)::

    exercises.add("05.uniform_entropy", check=lambda a: abs(a - math.log(256)) < 1e-4,
                  hint="entropy of p_k = 1/K for all K prototypes", reason="-sum 1/K log(1/K) = log K",
                  solution="answer = math.log(DCFG.out_dim)")

A coding exercise checks a function the learner wrote on inputs the learner has not seen:
``check=lambda f: all(f(x) == reference(x) for x in hidden_inputs)``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from ..config import ParameterError

SOLUTIONS_ENV = "VISLEARN_SOLUTIONS"


@dataclass(frozen=True)
class Exercise:
    name: str
    check: Callable[[Any], bool]   # True when the answer is right
    hint: str                      # shown on the first miss
    reason: str                    # shown from the second miss on
    solution: str                  # code that sets ``answer`` (it runs in the notebook's namespace)


_EXERCISES: dict[str, Exercise] = {}
_misses: Counter[str] = Counter()


def instructor_mode() -> bool:
    """True when ``VISLEARN_SOLUTIONS=1``: solutions run, and a failing check raises."""
    return os.environ.get(SOLUTIONS_ENV, "0") == "1"


def add(name: str, *, check: Callable[[Any], bool], hint: str, reason: str, solution: str) -> Exercise:
    """Register an exercise (registering the same name again replaces it: re-running a cell is fine)."""
    for field, value in (("hint", hint), ("reason", reason), ("solution", solution)):
        if not isinstance(value, str) or not value.strip():
            raise ParameterError(f"exercise {name!r}: {field} must be a non-empty string")
    _EXERCISES[name] = Exercise(name, check, hint, reason, solution)
    _misses.pop(name, None)
    return _EXERCISES[name]


def get(name: str) -> Exercise:
    if name not in _EXERCISES:
        known = ", ".join(sorted(_EXERCISES)) or "none yet: run the cell that adds it"
        raise ParameterError(f"no exercise named {name!r}; known: {known}")
    return _EXERCISES[name]


def check(name: str, answer: Any) -> bool:
    """Say in one line whether ``answer`` is right; a hint on the first miss, the reason after."""
    ex = get(name)
    try:
        right = bool(ex.check(answer))
        problem = ""
    except Exception as err:                    # a learner's answer of the wrong kind is a miss, not a crash
        right, problem = False, f" (checking it raised {type(err).__name__}: {err})"
    if right:
        print(f"✓ {name}: right.")
        return True
    _misses[name] += 1
    if instructor_mode():
        raise AssertionError(f"{name}: the solution did not pass its own check{problem}")
    help_text = f"hint: {ex.hint}" if _misses[name] == 1 else f"why: {ex.reason}"
    print(f"✗ {name}: not yet{problem}. {help_text}  (solution: exercises.solution({name!r}))")
    return False


def solution(name: str) -> str:
    """Print and return the solution's code."""
    code = get(name).solution
    print(code)
    return code


def solve(name: str, namespace: MutableMapping[str, Any], answer: Any = None) -> Any:
    """The answer to use: the learner's ``answer``, or in instructor mode the solution's (its code runs
    in ``namespace``, usually ``globals()``, and must set ``answer``)."""
    if not instructor_mode():
        return answer
    scope = dict(namespace)
    exec(get(name).solution, scope)             # instructor's own code, from the notebook
    if "answer" not in scope:
        raise ParameterError(f"the solution of {name!r} must set `answer`")
    return scope["answer"]
