"""The step ``language`` values Gristmill supports, and how to read them.

A language names the runtime image a step runs on: ``python:3.X-slim`` for CPU steps and
``python-cuda:3.X-Y.Z`` (Python 3.X on CUDA Y.Z) for GPU steps, the formats the documented
SDK accepts. ``runtime-images/versions.json`` is the source these tables are copied from;
a test fails when the two disagree, so add a version there first, then here.

Standard library only: the SDK checks a language before it sends anything.
"""

from __future__ import annotations

import re
from typing import NamedTuple

PYTHON = "python"
PYTHON_CUDA = "python-cuda"

PYTHON_VERSIONS: tuple[str, ...] = ("3.10", "3.11", "3.12", "3.13")

# Each CUDA line is offered with the Python versions the main frameworks publish wheels for.
CUDA_PYTHON_VERSIONS: dict[str, tuple[str, ...]] = {
    "11.8": ("3.10", "3.11", "3.12"),
    "12.1": ("3.10", "3.11", "3.12"),
    "12.4": ("3.10", "3.11", "3.12", "3.13"),
}

DEFAULT_LANGUAGE = "python:3.12-slim"

SUPPORTED_LANGUAGES: tuple[str, ...] = (
    *(f"{PYTHON}:{py}-slim" for py in PYTHON_VERSIONS),
    *(
        f"{PYTHON_CUDA}:{py}-{cuda}"
        for cuda, pythons in CUDA_PYTHON_VERSIONS.items()
        for py in pythons
    ),
)

# Languages the hosted platform's documentation lists that Gristmill builds no image for
# (their Python is past its end of life, and current frameworks publish no wheels for it).
# A step asking for one is accepted and runs on the nearest supported runtime (the same
# CUDA line, the oldest Python Gristmill builds), with a warning that says so.
NEAREST_SUPPORTED: dict[str, str] = {
    "python:3.8-slim": "python:3.10-slim",
    "python:3.9-slim": "python:3.10-slim",
    "python-cuda:3.8-11.8": "python-cuda:3.10-11.8",
    "python-cuda:3.9-11.8": "python-cuda:3.10-11.8",
    "python-cuda:3.9-12.1": "python-cuda:3.10-12.1",
}

_CPU_FORMAT = re.compile(r"python:(?P<py>3\.\d+)-slim")
_GPU_FORMAT = re.compile(r"python-cuda:(?P<py>3\.\d+)-(?P<cuda>\d+\.\d+)")


class Language(NamedTuple):
    family: str  # "python" or "python-cuda"
    python_version: str  # "3.12"
    cuda_version: str | None  # "12.4", or None for CPU images

    @property
    def name(self) -> str:
        if self.cuda_version is None:
            return f"{PYTHON}:{self.python_version}-slim"
        return f"{PYTHON_CUDA}:{self.python_version}-{self.cuda_version}"

    @property
    def tag(self) -> str:
        """The image tag: what follows the colon in the language name."""
        return self.name.split(":", 1)[1]

    @property
    def needs_gpu(self) -> bool:
        return self.cuda_version is not None


class UnsupportedLanguageError(ValueError):
    """A ``language`` value Gristmill has no runtime image for."""

    def __init__(self, language: object) -> None:
        self.language = language
        super().__init__(unsupported_language_message(language))


def unsupported_language_message(language: object, default: str | None = None) -> str:
    """Why ``language`` is refused and what to use; ``default`` is what a step without a
    language gets in this environment (it depends on its configuration and backend)."""
    cpu = ", ".join(name for name in SUPPORTED_LANGUAGES if name.startswith(f"{PYTHON}:"))
    gpu = ", ".join(name for name in SUPPORTED_LANGUAGES if name.startswith(f"{PYTHON_CUDA}:"))
    return (
        f"Unsupported language {language!r}. Use python:3.X-slim for CPU steps "
        f"({cpu}) or python-cuda:3.X-Y.Z for GPU steps, where Y.Z is the CUDA version "
        f"({gpu}). Without a language, steps use {default or DEFAULT_LANGUAGE}."
    )


def substitute_language(language: object) -> tuple[object, str | None]:
    """(the language a step runs on, a warning when it is not the one asked for): a
    documented language Gristmill does not build becomes its nearest supported one."""
    if isinstance(language, str) and language in NEAREST_SUPPORTED:
        nearest = NEAREST_SUPPORTED[language]
        return nearest, (
            f"Language {language!r} is documented by the hosted platform but Gristmill "
            f"builds no runtime for it (its Python is past end of life): the step runs on "
            f"{nearest!r}, the nearest supported runtime. Set language={nearest!r} to "
            "silence this warning.")
    return language, None


def is_supported(language: object) -> bool:
    return isinstance(language, str) and language in SUPPORTED_LANGUAGES


def parse_language(language: str) -> Language:
    """Split a supported language into (family, python_version, cuda_version).

    Raises ``UnsupportedLanguageError`` (a ``ValueError``) listing the valid values for
    anything else, including well-formed names of versions we do not build.
    """
    if not is_supported(language):
        raise UnsupportedLanguageError(language)
    cpu = _CPU_FORMAT.fullmatch(language)
    if cpu is not None:
        return Language(PYTHON, cpu["py"], None)
    gpu = _GPU_FORMAT.fullmatch(language)
    # Every supported name matches one of the two formats; a failure here is a bug in the
    # tables above, not a user error.
    assert gpu is not None, language
    return Language(PYTHON_CUDA, gpu["py"], gpu["cuda"])


def default_language() -> str:
    return DEFAULT_LANGUAGE


def runtime_image(language: str, repository: str, sdk_version: str | None = None) -> str:
    """The runtime base image reference for a language.

    ``repository`` is where the images were pushed (``<registry>/gristmill-runtime``);
    with ``sdk_version`` the immutable ``<tag>-sdk<version>`` tag is used instead of the
    moving one, so a step image is always built on the runner it was tested with.
    """
    parsed = parse_language(language)
    tag = parsed.tag if sdk_version is None else f"{parsed.tag}-sdk{sdk_version}"
    return f"{repository.rstrip('/')}/{parsed.family}:{tag}"
