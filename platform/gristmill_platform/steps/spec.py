"""What a step creation request asks for, parsed and validated (pure)."""

from __future__ import annotations

import math
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gristmill_platform.errors import BadRequest
from gristmill_platform.http.forms import parse_bool, revive_json_leaves
from gristmill_platform.steps.names import validate_io_name
from gristmill_platform.strict_json import strict_loads

DATA_TYPES = ("string", "number", "boolean", "json", "array", "file")
CONTAINER_KEYS = (
    "language", "repository_url", "repository_branch", "repository_deploy_key",
    "requirements_path", "included_folders", "system_dependencies", "dockerfile_path",
)
MAX_IO = 100


@dataclass(frozen=True)
class IODecl:
    name: str
    data_type: str
    description: str | None = None
    is_required: bool = True
    default_value: Any = None

    def as_input(self) -> dict[str, Any]:
        return {"name": self.name, "data_type": self.data_type, "description": self.description,
                "is_required": self.is_required, "default_value": self.default_value}

    def as_output(self) -> dict[str, Any]:
        return {"name": self.name, "data_type": self.data_type, "description": self.description}


@dataclass(frozen=True)
class ContainerConfig:
    language: str
    repository_url: str | None = None
    repository_branch: str | None = None
    requirements_path: str | None = None
    included_folders: list[str] = field(default_factory=lambda: ["/"])
    system_dependencies: list[str] = field(default_factory=list)
    dockerfile_path: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "repository_url": self.repository_url,
            "repository_branch": self.repository_branch,
            "included_folders": self.included_folders,
            "system_dependencies": self.system_dependencies,
            "dockerfile_path": self.dockerfile_path,
            "requirements_path": self.requirements_path,
        }


@dataclass(frozen=True)
class ProjectDefaults:
    """The environment's defaults for container settings (the documented project settings)."""

    language: str
    repository_url: str | None = None
    repository_branch: str | None = None
    repository_deploy_key: str | None = None
    requirements_path: str | None = None
    included_folders: tuple[str, ...] = ("/",)
    system_dependencies: tuple[str, ...] = ()


def relative_path(value: object, what: str) -> str:
    """A path inside the step's folder: leading '/' ignored (as the client does), no '..'."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{what} must be a non-empty path")
    cleaned = value.strip().lstrip("/")
    if cleaned == "":
        return ""
    normal = posixpath.normpath(cleaned)
    # ".." or "../...", not "..hidden", a folder's name
    if normal == ".." or normal.startswith("../") or "\\" in cleaned or "\x00" in cleaned:
        raise BadRequest(f"{what} {value!r} must stay inside the step's folder")
    return normal


def number_from_text(raw: str, where: str, error: type[BadRequest] = BadRequest
                     ) -> int | float:
    """A number given as text (a form field, an environment variable): an int if it is
    one, else a finite float. 'nan', 'inf' and '1e999' parse as floats but have no JSON
    form: stored, they would fail every answer that shows them."""
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        number = float(raw)
    except ValueError:
        raise error(f"{where} must be a number, got {raw!r}") from None
    if not math.isfinite(number):
        raise error(f"{where} must be a finite number, got {raw!r}")
    return number


def coerce_value(value: Any, data_type: str, where: str) -> Any:
    """Check a value against its declared type; strings from a form are converted."""
    if value is None:
        return None
    if data_type == "string":
        if not isinstance(value, str):
            raise BadRequest(f"{where} must be a string, got {type(value).__name__}")
        return value
    if data_type == "number":
        if isinstance(value, str):
            return number_from_text(value, where)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f"{where} must be a number, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise BadRequest(f"{where} must be a finite number, got {value!r}")
        return value
    if data_type == "boolean":
        if isinstance(value, str):
            return parse_bool(value, where)
        if not isinstance(value, bool):
            raise BadRequest(f"{where} must be a boolean, got {type(value).__name__}")
        return value
    if data_type == "array":
        if isinstance(value, str):
            try:
                value = strict_loads(value)
            except ValueError:
                raise BadRequest(f"{where} must be an array, got {value!r}") from None
        if not isinstance(value, list):
            raise BadRequest(f"{where} must be an array, got {type(value).__name__}")
        return revive_json_leaves(value)
    if data_type == "json":
        return revive_json_leaves(value) if isinstance(value, dict | list) else value
    raise BadRequest(f"{where}: a {data_type} value cannot be given here")


def check_value(value: Any, data_type: str, where: str) -> Any:
    """Strict check of a JSON value against its declared type (no conversion)."""
    if value is None:
        return None
    expected = {
        "string": (str,), "number": (int, float), "boolean": (bool,), "array": (list,),
    }.get(data_type)
    if data_type == "json":
        return value
    if data_type == "file":
        raise BadRequest(f"{where} is a file: send it as a file, not as a JSON value")
    assert expected is not None
    if not isinstance(value, expected) or (data_type == "number" and isinstance(value, bool)):
        raise BadRequest(f"{where} must be of type {data_type}, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequest(f"{where} must be a finite number, got {value!r}")
    return value


def _io_list(raw: Any, what: str) -> list[Mapping[str, Any]]:
    if raw is None or raw == "":
        return []
    if isinstance(raw, dict):  # a JSON client may send a single object
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise BadRequest(f"{what} must be a list of objects")
    if len(raw) > MAX_IO:
        raise BadRequest(f"At most {MAX_IO} {what}")
    return raw


def _data_type(item: Mapping[str, Any], where: str) -> str:
    data_type = item.get("data_type", "string") or "string"
    if data_type not in DATA_TYPES:
        raise BadRequest(f"{where}: unknown data_type {data_type!r} "
                         f"(one of {', '.join(DATA_TYPES)})")
    return str(data_type)


def _description(item: Mapping[str, Any]) -> str | None:
    description = item.get("description")
    return str(description) if description not in (None, "") else None


def parse_inputs(raw: Any) -> list[IODecl]:
    declared: list[IODecl] = []
    for item in _io_list(raw, "inputs"):
        name = validate_io_name(item.get("name") or item.get("input_name"), "input")
        where = f"Input {name!r}"
        data_type = _data_type(item, where)
        is_required = parse_bool(item["is_required"], f"{where} is_required") \
            if "is_required" in item and item["is_required"] is not None else True
        default = item.get("default_value")
        if default is not None and data_type == "file":
            raise BadRequest(f"{where}: a file input cannot have a default value")
        if default == "" and data_type != "string":
            default = None  # an empty form field is the client's rendering of None
        default = coerce_value(default, data_type, f"{where} default_value")
        declared.append(IODecl(name, data_type, _description(item), is_required, default))
    _unique(declared, "input")
    return declared


def parse_outputs(raw: Any) -> list[IODecl]:
    declared = []
    for item in _io_list(raw, "outputs"):
        name = validate_io_name(item.get("name") or item.get("output_name"), "output")
        declared.append(IODecl(name, _data_type(item, f"Output {name!r}"), _description(item),
                               is_required=False))
    _unique(declared, "output")
    return declared


def _unique(declared: list[IODecl], kind: str) -> None:
    names = [d.name for d in declared]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BadRequest(f"Duplicate {kind} name(s): {', '.join(duplicates)}")


def _string_list(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadRequest(f"{what} must be a list of non-empty strings")
    return list(value)


def resolve_container_config(
    raw: Any, defaults: ProjectDefaults
) -> tuple[ContainerConfig, str | None]:
    """Apply the three states of each key (contract §2.1): absent -> project default,
    empty string -> explicit null, value -> that value. Returns (config, deploy key)."""
    if raw in (None, ""):
        raw = {}
    if not isinstance(raw, dict):
        raise BadRequest("container_config must be an object")
    unknown = sorted(set(raw) - set(CONTAINER_KEYS) - {"local_folder"})
    if unknown:
        raise BadRequest(f"Unknown container_config key(s): {', '.join(unknown)} "
                         f"(known: {', '.join(CONTAINER_KEYS)})")

    def pick(key: str, default: Any) -> Any:
        if key not in raw:
            return default
        return None if raw[key] == "" else raw[key]

    language = pick("language", defaults.language) or defaults.language
    requirements = pick("requirements_path", defaults.requirements_path)
    folders = pick("included_folders", list(defaults.included_folders))
    dependencies = pick("system_dependencies", list(defaults.system_dependencies))
    dockerfile = pick("dockerfile_path", None)
    repository_url = pick("repository_url", defaults.repository_url)
    branch = pick("repository_branch", defaults.repository_branch)
    deploy_key = pick("repository_deploy_key", defaults.repository_deploy_key)
    for key, value in (("language", language), ("repository_url", repository_url),
                       ("repository_branch", branch), ("repository_deploy_key", deploy_key)):
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"container_config.{key} must be a string")
    config = ContainerConfig(
        language=str(language),
        repository_url=repository_url,
        repository_branch=branch,
        requirements_path=(relative_path(requirements, "requirements_path")
                           if requirements else None),
        included_folders=([relative_path(f, "included_folders entry") or "/"
                           for f in _string_list(folders, "included_folders")]
                          if folders else ["/"]),
        system_dependencies=(_string_list(dependencies, "system_dependencies")
                             if dependencies else []),
        dockerfile_path=relative_path(dockerfile, "dockerfile_path") if dockerfile else None,
    )
    return config, deploy_key
