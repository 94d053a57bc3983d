"""The typing matrix in docs/typing.md is generated from the cases and kept current."""

import sys
from pathlib import Path


# typing_tests/ is not an installed package: import it from the checkout
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from typing_tests import matrix


ALL_CASES = matrix.load_cases()


def test_the_doc_matches_the_cases() -> None:
    assert matrix.doc_is_current(), "docs/typing.md is out of date: python -m typing_tests.matrix"
    assert matrix.main(["--check"]) == 0


def test_check_fails_on_a_stale_doc_and_only_the_marked_region_is_rewritten(
    tmp_path: Path,
) -> None:
    stale = tmp_path / "typing.md"
    stale.write_text(f"before\n{matrix.START}\nold table\n{matrix.END}\nafter\n")
    assert not matrix.doc_is_current(stale)
    text = matrix.rewritten(stale.read_text(), ALL_CASES)
    assert text.startswith(f"before\n{matrix.START}\n")
    assert text.endswith(f"\n{matrix.END}\nafter\n")
    stale.write_text(text)
    assert matrix.doc_is_current(stale)


def test_every_case_has_a_concept() -> None:
    untagged = [case.name for case in ALL_CASES if "concept" not in case.tags]
    assert untagged == []


def test_kind_matrix_cases_are_fully_tagged() -> None:
    for case in ALL_CASES:
        if case.tags.get("concept") == "kinds":
            assert case.cell is not None, case.name
            assert case.tags.get("check") in matrix.CHECKS, case.name


def test_every_cell_of_the_kind_matrix_has_a_positive_and_a_negative_case() -> None:
    assert matrix.missing_cells(ALL_CASES) == []
    assert len(matrix.matrix_cells(ALL_CASES)) == 4 * 2 * 5


def test_the_suite_has_at_least_350_cases_with_unique_names() -> None:
    names = [case.name for case in ALL_CASES]
    assert len(names) >= 350
    assert len(set(names)) == len(names)


def test_checkers_are_mypy_or_pyright() -> None:
    for case in ALL_CASES:
        assert case.checkers, case.name
        assert set(case.checkers) <= set(matrix.CHECKERS), case.name


def test_cases_named_as_divergences_say_what_diverges() -> None:
    for case in ALL_CASES:
        if case.name.endswith("_divergence"):
            assert case.tags.get("divergence"), case.name
