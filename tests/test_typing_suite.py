"""The typing suite's own machinery: expectations are read strictly and can fail."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


# typing_tests/ is not an installed package: import it from the checkout
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from typing_tests import checkers, mutate  # noqa: E402


def _case(main: str) -> checkers.Case:
    return checkers.Case("c", Path("test_x.yml"), main, checkers.CHECKERS, {}, mypy_plugin=False)


def test_an_expectation_names_checker_code_and_fragment() -> None:
    """Every token of `# E:` is read; a line may carry several, for both checkers."""
    case = _case(
        "x = 1\n"
        'f(x)  # E: mypy[arg-type] `Argument 1 to "f"`  pyright[reportArgumentType] `param`\n'
    )
    found, problems = checkers.expectations(case)
    assert problems == []
    assert found == [
        checkers.Expectation("mypy", 2, "arg-type", 'Argument 1 to "f"'),
        checkers.Expectation("pyright", 2, "reportArgumentType", "param"),
    ]


@pytest.mark.parametrize(
    "line",
    [
        "f(x)  # type: ignore[arg-type]",
        "f(x)  # pyright: ignore[reportArgumentType]",
        "f(x)  # E: mypy[arg-type]",
        "f(x)  # E: mypy `no code`",
        "# E: mypy[arg-type] `on a line of its own`",
    ],
)
def test_ignore_comments_and_malformed_expectations_are_problems(line: str) -> None:
    """A case cannot silence a checker, and an expectation without a fragment is refused."""
    _, problems = checkers.expectations(_case(line + "\n"))
    assert problems != []


def test_an_error_must_match_code_line_and_fragment() -> None:
    """A different code, line or message is both a missed expectation and an extra error."""
    case = _case("f(x)  # E: mypy[arg-type] `Argument 1`\n")
    right = checkers.Diagnostic(1, "arg-type", 'Argument 1 to "f" has incompatible type')
    assert checkers.compare(case, "mypy", [right]) == []
    for wrong in (
        right._replace(code="call-arg"),
        right._replace(line=2),
        right._replace(message="Too many arguments"),
    ):
        assert len(checkers.compare(case, "mypy", [wrong])) == 2
    assert len(checkers.compare(case, "mypy", [])) == 1
    assert len(checkers.compare(case, "mypy", [right, right._replace(code="misc")])) == 1
    # the other checker's expectations do not apply to this one
    assert len(checkers.compare(case, "pyright", [right])) == 1


CASES = """\
- case: passes
  matrix: {concept: misuse}
  main: |
    from typing import assert_type
    def f(x: int) -> None:
        assert_type(x + 1, int)

- case: fake_negative
  matrix: {concept: misuse}
  main: |
    x: int = 1  # E: mypy[assignment] `Incompatible`  pyright[reportAssignmentType] `assignable`

- case: untyped_function
  matrix: {concept: misuse}
  main: |
    def f(x):
        return x
"""


def test_plain_pytest_typing_tests_is_strict(tmp_path: Path) -> None:
    """
    `pytest typing_tests` with no option: a fake negative and an untyped function both fail.

    The untyped function is an error only under strict settings, so this fails if the
    strictness came from a command-line option instead of the suite itself.
    """
    suite = tmp_path / "typing_tests"
    shutil.copytree(
        ROOT / "typing_tests", suite, ignore=shutil.ignore_patterns("cases", "__pycache__")
    )
    (suite / "cases").mkdir()
    (suite / "cases" / "test_fake.yml").write_text(CASES)
    (tmp_path / "src").symlink_to(ROOT / "src")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "typing_tests", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    summary = done.stdout.strip().splitlines()[-1]
    assert "4 failed, 2 passed" in summary, done.stdout
    for item in ("fake_negative", "untyped_function"):
        for checker in checkers.CHECKERS:
            assert f"FAILED typing_tests/cases/test_fake.yml::{checker}::{item}" in done.stdout


def test_every_mutation_applies_and_the_doc_lists_them() -> None:
    """`python -m typing_tests.mutate --static`: the symbols resolve and the table is current."""
    assert len(mutate.MUTATIONS) >= 20
    assert mutate.static_problems() == []


def test_a_mutation_is_located_by_symbol_not_by_file(tmp_path: Path) -> None:
    """A mutation names a public symbol; moving its module elsewhere does not break it."""
    path, first, last = mutate.locate("ErrorContext.reschedule")
    assert path.name == "_contexts.py"
    assert "def reschedule" in path.read_text().splitlines()[first - 1]
    assert first < last
    path, first, _ = mutate.locate("Engine.__init__#2")
    assert "deps: R" in "".join(path.read_text().splitlines(keepends=True)[first - 1 : first + 5])
    broken = mutate.Mutation("x", "Retry", "no such text", "y", "nothing")
    shutil.copytree(ROOT / "src", tmp_path / "src")
    with pytest.raises(LookupError, match="occurs 0 times"):
        mutate.apply(broken, tmp_path / "src" / "durable_jobs")
