"""Every public name is documented: it appears, as a word, somewhere in docs/*.md."""

import re
from pathlib import Path
from types import ModuleType

import pytest

import durable_jobs
import durable_jobs.otel
import durable_jobs.postgres
import durable_jobs.pytest_plugin
import durable_jobs.testing


DOCS = Path(__file__).resolve().parent.parent / "docs"
MODULES: tuple[ModuleType, ...] = (
    durable_jobs,
    durable_jobs.testing,
    durable_jobs.postgres,
    durable_jobs.pytest_plugin,
    durable_jobs.otel,
)


def _names() -> list[tuple[str, str]]:
    return [(module.__name__, name) for module in MODULES for name in module.__all__]


@pytest.fixture(scope="module")
def docs_text() -> str:
    return "\n".join(page.read_text() for page in sorted(DOCS.glob("*.md")))


@pytest.mark.parametrize(("module", "name"), _names(), ids=[n for _, n in _names()])
def test_public_name_is_mentioned_in_the_docs(module: str, name: str, docs_text: str) -> None:
    assert re.search(rf"(?<!\w){re.escape(name)}(?!\w)", docs_text), (
        f"{module}.{name} is public (in __all__) but no page of docs/ mentions it"
    )


def test_every_module_lists_its_public_names() -> None:
    for module in MODULES:
        assert module.__all__, module.__name__
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert missing == [], module.__name__
