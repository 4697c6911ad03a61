"""Pure checks on a step's code and Git errors, made at creation without running it."""

from __future__ import annotations

import pytest

from gristmill.languages import (
    NEAREST_SUPPORTED,
    is_supported,
    substitute_language,
    unsupported_language_message,
)
from gristmill_platform.steps.code import function_defined
from gristmill_platform.steps.git import failure_message

SOURCE = '''
import os
from json import loads as parse
from pkg import sub
import numpy.linalg

def plain(): ...
async def coro(): ...
class Callable: ...
assigned = lambda: None
annotated: object = plain
if os.environ.get("X"):
    def conditional(): ...
else:
    def other_branch(): ...
try:
    def in_try(): ...
except ImportError:
    def in_handler(): ...
finally:
    def in_finally(): ...
match os.name:
    case "posix":
        def in_case(): ...
    case _:
        pass

def outer():
    def nested(): ...
'''


@pytest.mark.parametrize("name", ["plain", "coro", "Callable", "assigned", "annotated",
                                  "conditional", "other_branch", "in_try", "in_handler",
                                  "in_finally", "in_case",
                                  "parse", "sub", "numpy", "os"])
def test_module_level_names_are_found(name) -> None:
    assert function_defined(SOURCE, name) is True


@pytest.mark.parametrize("name", ["nested", "missing", "loads"])
def test_absent_names_are_reported(name) -> None:
    assert function_defined(SOURCE, name) is False


@pytest.mark.parametrize("source", ["from helpers import *\n", "def __getattr__(n): ...\n",
                                    "def broken(:\n"])
def test_undecidable_sources_are_not_refused(source) -> None:
    assert function_defined(source, "anything") is None


def test_git_failure_keeps_the_cause_and_hides_credentials() -> None:
    stderr = ("ssh: Could not resolve hostname nonexistent.invalid: Name or service not known\n"
              "fatal: Could not read from remote repository.\n\n"
              "Please make sure you have the correct access rights\n"
              "and the repository exists.\n")
    message = failure_message("clone", stderr, 128)
    assert message.startswith("git clone failed: ssh: Could not resolve hostname")
    assert "and the repository exists." in message and "\n" not in message
    hidden = failure_message("clone", "fatal: https://u:tok@h/x.git not found", 128)
    assert "tok" not in hidden and "***@h" in hidden
    assert failure_message("clone", "", 3) == "git clone failed: exit code 3"
    assert len(failure_message("clone", "x" * 10_000, 1)) < 2100


def test_documented_old_languages_run_on_the_nearest_supported_runtime() -> None:
    for documented in ("python:3.8-slim", "python:3.9-slim", "python-cuda:3.9-11.8"):
        nearest, warning = substitute_language(documented)
        assert is_supported(nearest) and nearest == NEAREST_SUPPORTED[documented]
        assert warning and documented in warning and str(nearest) in warning
    assert substitute_language("python:3.11-slim") == ("python:3.11-slim", None)
    assert substitute_language("python:2.7-slim") == ("python:2.7-slim", None)


def test_unsupported_language_message_names_the_environment_default() -> None:
    message = unsupported_language_message("python:2.7-slim", "python:3.11-slim")
    assert "Without a language, steps use python:3.11-slim." in message
