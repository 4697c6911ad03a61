"""Finding and importing the step function, with failures a step author can act on."""

from __future__ import annotations

import importlib
import importlib.util
import keyword
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__))
_ASYNCIO_DIR = os.path.join(os.path.dirname(os.__file__), "asyncio")
# The server mode runs `def` functions in a thread pool: its frames sit between the runner's
# and the step's.
_CONCURRENT_DIR = os.path.join(os.path.dirname(os.__file__), "concurrent")
# importlib.import_module's own frame (the frozen bootstrap frames are matched by name)
_IMPORTLIB_DIR = os.path.dirname(os.path.abspath(importlib.__file__))


class StepFailure(Exception):
    """The execution fails with this error (reported in ``finish``)."""

    def __init__(self, type_name: str, message: str, traceback_text: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text

    def as_error(self) -> dict[str, str]:
        return {"type": self.type_name, "message": self.message, "traceback": self.traceback_text}


def _is_machinery(filename: str) -> bool:
    return (
        filename.startswith(_RUNTIME_DIR)
        or filename.startswith(_ASYNCIO_DIR)
        or filename.startswith(_CONCURRENT_DIR)
        or filename.startswith(_IMPORTLIB_DIR)
        or filename.startswith("<frozen importlib")
    )


def user_traceback(error: BaseException) -> str:
    """The traceback from the first frame of the step's own code on.

    The runner's and importlib's frames above it are noise to the step author; when the
    whole traceback is machinery (a runner bug), it is kept entire.
    """
    tb: TracebackType | None = error.__traceback__
    while tb is not None and _is_machinery(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    if tb is None:
        tb = error.__traceback__
    return "".join(traceback.format_exception(type(error), error, tb))


def failure_from(error: BaseException, context: str = "") -> StepFailure:
    message = str(error) or repr(error)
    if isinstance(error, SystemExit):
        message = f"sys.exit({error.code!r}) was called"
    return StepFailure(
        type(error).__qualname__,
        f"{context}{message}",
        user_traceback(error),
    )


def resolve_function_file(step_dir: Path, function_path: str) -> Path:
    relative = function_path.strip().replace("\\", "/")
    if not relative:
        raise StepFailure("StepDefinitionError", "The step has no function_path.")
    candidate = step_dir / relative
    if not candidate.exists() and not relative.endswith(".py"):
        with_suffix = step_dir / f"{relative}.py"
        if with_suffix.is_file():
            candidate = with_suffix
    if candidate.is_dir():
        raise StepFailure(
            "FileNotFoundError",
            f"function_path {function_path!r} is a folder in the step folder {step_dir}, "
            "not a Python file.",
        )
    if not candidate.is_file():
        raise StepFailure(
            "FileNotFoundError",
            f"function_path {function_path!r}: no such file in the step folder {step_dir}.",
        )
    return candidate.resolve()


def _dotted_name(step_dir: Path, file: Path) -> str | None:
    """``src/main.py`` → ``src.main``, when every part can be a module name."""
    if file.suffix != ".py":
        return None
    try:
        parts = file.with_suffix("").relative_to(step_dir).parts
    except ValueError:
        return None
    if not parts or not all(part.isidentifier() and not keyword.iskeyword(part) for part in parts):
        return None
    return ".".join(parts)


def _top_level_is_ours(top: str, step_dir: Path) -> bool:
    """Would ``import top`` pick the step folder's module or package, and nothing else?"""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    locations = list(spec.submodule_search_locations or [])
    if not locations and spec.origin:
        locations = [spec.origin]
    expected = {step_dir / top, step_dir / f"{top}.py"}
    return any(Path(location).resolve() in expected for location in locations)


def _prepend_path(folder: Path, index: int) -> None:
    entry = str(folder)
    if entry in sys.path[: index + 1]:
        return
    sys.path.insert(index, entry)


def prepare_step_folder(step_dir: Path) -> None:
    os.chdir(step_dir)
    _prepend_path(step_dir, 0)


def import_step_module(step_dir: Path, function_path: str) -> tuple[ModuleType, Path]:
    """Import the step's file once; module-level code runs here.

    Imported by its dotted path from the step folder when possible (``src.main``), so that
    relative imports and ``from src.utils import x`` work; the file's own folder is on
    ``sys.path`` as well, so that ``from utils import x`` next to it works like in a
    script. A file that cannot be imported that way (outside the step folder, a name
    taken by an installed package, a name that is no identifier) is loaded from its path.
    """
    file = resolve_function_file(step_dir, function_path)
    if file.parent != step_dir:
        _prepend_path(file.parent, 1)
    importlib.invalidate_caches()
    context = f"Importing {function_path} failed: "
    dotted = _dotted_name(step_dir, file)
    if dotted is not None and _top_level_is_ours(dotted.partition(".")[0], step_dir):
        try:
            module = importlib.import_module(dotted)
        except BaseException as error:
            raise failure_from(error, context) from None
        module_file = getattr(module, "__file__", None)
        if module_file and Path(module_file).resolve() == file:
            return module, file
    name = file.stem if file.stem.isidentifier() else "step_module"
    if name in sys.modules:
        name = f"__gristmill_step_{name}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise StepFailure("ImportError", f"{function_path} cannot be imported as Python code.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as error:
        sys.modules.pop(name, None)
        raise failure_from(error, context) from None
    return module, file


def find_function(module: ModuleType, function_path: str, function_name: str) -> Callable[..., Any]:
    name = function_name.strip()
    if not name:
        raise StepFailure("StepDefinitionError", "The step has no function_name.")
    if not hasattr(module, name):
        defined = sorted(
            attribute
            for attribute, value in vars(module).items()
            if callable(value)
            and not attribute.startswith("_")
            and getattr(value, "__module__", None) == module.__name__
        )
        hint = (
            f" Functions defined there: {', '.join(defined)}."
            if defined
            else " It defines no function."
        )
        raise StepFailure(
            "FunctionNotFoundError",
            f"Function {name!r} not found in {function_path}.{hint}",
        )
    function = getattr(module, name)
    # a @step function (gristmill.authoring): its entry returns the dict of outputs
    function = getattr(function, "__gristmill_entry__", function)
    if not callable(function):
        raise StepFailure(
            "FunctionNotFoundError",
            f"{name!r} in {function_path} is a {type(function).__name__}, not a function.",
        )
    return function  # type: ignore[no-any-return]
