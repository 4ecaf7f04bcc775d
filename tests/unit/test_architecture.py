"""The house rules that code review would otherwise have to remember: the features' import graph, module size and
first lines, links that leave the repository, and the error catalogue."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from importlinter import configuration
from importlinter.application.use_cases import lint_imports

import app.main  # noqa: F401 - imports every feature, so that every error class exists
from app.core.errors import AppError, error_catalogue

ROOT = Path(__file__).resolve().parents[2]
APP_MODULES = sorted(p for p in (ROOT / "app").rglob("*.py") if p.name != "__init__.py" or p.stat().st_size)


def test_features_import_each_other_only_downwards_and_never_in_a_circle():
    """The contracts in pyproject.toml ([tool.importlinter]): contacts > users > auth > core, contacts never
    reaches users, nothing below the application imports app.main or app.cli."""
    configuration.configure()  # what the lint-imports command does first
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_logo=True) is True


def test_the_architecture_document_draws_the_same_layers_as_the_contracts():
    document = (ROOT / "docs" / "architecture.md").read_text()
    configured = re.search(r"layers = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.S)
    assert configured is not None
    layers = re.findall(r'"app\.(\w+)"', configured.group(1))
    drawn = re.search(r"```text\n(.*?)```", document, re.S)
    assert drawn is not None
    order = re.findall(r"\b(web|dav|interchange|contacts|users|auth|core)\b", drawn.group(1))
    assert list(dict.fromkeys(order)) == layers


@pytest.mark.parametrize("path", APP_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_module_is_small_and_says_first_what_it_is_for(path: Path):
    source = path.read_text()
    assert len(source.splitlines()) <= 400
    assert ast.get_docstring(ast.parse(source)), "the first line should say what the module is for"


def test_nothing_links_outside_the_repository():
    documents = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "app").rglob("*.py")]
    outside = [str(p.relative_to(ROOT)) for p in documents if re.search(r"\.\./shared|shared/spec", p.read_text())]
    assert outside == []


def _error_classes() -> list[type[AppError]]:
    found: list[type[AppError]] = []
    pending = list(AppError.__subclasses__())
    while pending:
        error = pending.pop()
        found.append(error)
        pending.extend(error.__subclasses__())
    return found


def test_every_error_class_declares_a_code_of_its_own_and_no_two_share_one():
    classes = _error_classes()
    without = [error.__name__ for error in classes if "code" not in vars(error)]
    codes = [error.code for error in classes]

    assert without == []
    assert sorted({code for code in codes if codes.count(code) > 1}) == []


def test_the_error_catalogue_in_docs_lists_every_code_with_its_status():
    table = dict(re.findall(r"^\| `(\w+)` \| (\d+) \|", (ROOT / "docs" / "errors.md").read_text(), re.M))
    expected = {code: str(status) for code, (status, _) in error_catalogue().items()}

    assert table == expected
