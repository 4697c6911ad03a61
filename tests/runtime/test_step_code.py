"""Loading the step's code and judging what it returns: what works, and the failure
messages a step author gets when it does not."""

from __future__ import annotations

from pathlib import Path

from tests.runtime.conftest import RunStep

STRING = "string"


def _out(*names: str, data_type: str = STRING) -> list[dict[str, str]]:
    return [{"name": name, "data_type": data_type} for name in names]


def test_function_that_raises_fails_with_its_traceback(run_step: RunStep) -> None:
    result = run_step(
        {
            "src/main.py": """
                def helper(value):
                    raise ValueError(f"bad value {value}")

                def entry(a):
                    print("before the error")
                    helper(a)
            """
        },
        inputs={"a": 7},
    )
    assert result.returncode == 1
    error = result.error
    assert error["type"] == "ValueError"
    assert error["message"] == "bad value 7"
    assert 'raise ValueError(f"bad value {value}")' in error["traceback"]
    assert "main.py" in error["traceback"] and "in helper" in error["traceback"]
    # The runner's own frames are not the author's business.
    assert "gristmill/runtime" not in error["traceback"]
    stderr = "\n".join(result.double.messages("stderr"))
    assert "ValueError: bad value 7" in stderr
    assert "Traceback (most recent call last):" in stderr
    assert result.double.messages("stdout") == ["before the error"]
    # Still on the worker's real stderr (the pod log).
    assert "ValueError: bad value 7" in result.stderr


def test_import_error_in_step_code(run_step: RunStep) -> None:
    result = run_step(
        {"src/main.py": "import not_installed_anywhere_xyz\n\ndef entry():\n    pass\n"}
    )
    assert result.returncode == 1
    assert result.error["type"] == "ModuleNotFoundError"
    assert result.error["message"].startswith("Importing src/main.py failed:")
    assert "not_installed_anywhere_xyz" in result.error["message"]
    assert "import not_installed_anywhere_xyz" in result.error["traceback"]
    assert any("ModuleNotFoundError" in line for line in result.double.messages("stderr"))


def test_syntax_error_in_step_code(run_step: RunStep) -> None:
    result = run_step({"src/main.py": "def entry(:\n    pass\n"})
    assert result.returncode == 1
    assert result.error["type"] == "SyntaxError"
    assert "main.py" in result.error["traceback"]


def test_missing_function_names_the_ones_defined(run_step: RunStep) -> None:
    result = run_step(
        {"src/main.py": "import os\n\ndef train():\n    pass\n\ndef predict():\n    pass\n"},
        function_name="entry",
    )
    assert result.returncode == 1
    assert result.error["type"] == "FunctionNotFoundError"
    assert result.error["message"] == (
        "Function 'entry' not found in src/main.py. Functions defined there: predict, train."
    )
    assert any("FunctionNotFoundError" in line for line in result.double.messages("stderr"))


def test_name_that_is_not_a_function(run_step: RunStep) -> None:
    result = run_step({"src/main.py": "entry = 3\n"})
    assert result.returncode == 1
    assert result.error["message"] == "'entry' in src/main.py is a int, not a function."


def test_missing_file(run_step: RunStep) -> None:
    result = run_step({"src/other.py": ""}, function_path="src/main.py")
    assert result.returncode == 1
    assert result.error["type"] == "FileNotFoundError"
    assert "'src/main.py'" in result.error["message"]
    assert "no such file in the step folder" in result.error["message"]


def test_inputs_that_do_not_match_the_signature(run_step: RunStep) -> None:
    result = run_step({"src/main.py": "def entry(a):\n    pass\n"}, inputs={"a": 1, "b": 2})
    assert result.returncode == 1
    assert result.error["type"] == "TypeError"
    assert "with the step's inputs (a, b)" in result.error["message"]
    assert "'b'" in result.error["message"]


def test_sibling_relative_and_package_imports(run_step: RunStep, tmp_path: Path) -> None:
    counter = tmp_path / "imports"
    result = run_step(
        {
            "src/__init__.py": "",
            "src/helper.py": "VALUE = 'sibling'\n",
            "src/main.py": f"""
                from pathlib import Path
                import helper                   # next to the file, like a script
                from . import helper as rel     # relative, within the package
                from src.helper import VALUE    # from the step folder
                from lib.tools import shout     # another folder of the step
                with open({str(counter)!r}, "a") as f:
                    f.write("x")

                def entry():
                    import os
                    return {{"values": [helper.VALUE, rel.VALUE, VALUE, shout("ok")],
                            "cwd": os.getcwd(), "data": Path("data.txt").read_text()}}
            """,
            "lib/tools.py": "def shout(text):\n    return text.upper()\n",
            "data.txt": "read from the working directory",
        },
        outputs=[{"name": "values", "data_type": "array"}, {"name": "cwd", "data_type": STRING},
                 {"name": "data", "data_type": STRING}],
    )
    assert result.returncode == 0, result.stderr
    outputs = result.finish["outputs"]
    assert outputs["values"] == ["sibling", "sibling", "sibling", "OK"]
    assert Path(outputs["cwd"]) == result.step_dir
    assert outputs["data"] == "read from the working directory"
    assert counter.read_text() == "x"  # module-level code ran once


def test_relative_import_without_init_file(run_step: RunStep) -> None:
    result = run_step(
        {
            "src/helper.py": "VALUE = 1\n",
            "src/main.py": "from .helper import VALUE\n\ndef entry():\n    return {'v': VALUE}\n",
        },
        outputs=_out("v", data_type="number"),
    )
    assert result.returncode == 0, result.stderr
    assert result.finish["outputs"] == {"v": 1}


def test_file_named_like_an_installed_package(run_step: RunStep) -> None:
    # "json" is taken by the standard library: the step's json.py is still the one run.
    result = run_step(
        {"json.py": "def entry():\n    return {'who': __name__}\n"},
        function_path="json.py",
        outputs=_out("who"),
    )
    assert result.returncode == 0, result.stderr
    assert result.finish["outputs"]["who"].endswith("json")
    assert result.finish["outputs"]["who"] != "json"


def test_return_value_that_is_not_a_dict(run_step: RunStep) -> None:
    result = run_step({"src/main.py": "def entry():\n    return [1, 2]\n"}, outputs=_out("r"))
    assert result.returncode == 1
    assert result.error["type"] == "OutputError"
    assert result.error["message"] == (
        "entry() in src/main.py must return a dict of outputs (or None), got list."
    )


def test_unknown_output(run_step: RunStep) -> None:
    result = run_step(
        {"src/main.py": "def entry():\n    return {'r': 'x', 'extra': 1}\n"}, outputs=_out("r")
    )
    assert result.returncode == 1
    assert result.error["message"] == (
        "entry() in src/main.py returned outputs the step does not declare: extra "
        "(declared: r)."
    )


def test_unserializable_output(run_step: RunStep) -> None:
    result = run_step(
        {"src/main.py": "def entry():\n    return {'r': object()}\n"}, outputs=_out("r")
    )
    assert result.returncode == 1
    assert result.error["type"] == "OutputError"
    assert result.error["message"].startswith("Output 'r' cannot be sent as JSON:")
    assert "object" in result.error["message"]


def test_nan_output_is_refused(run_step: RunStep) -> None:
    result = run_step(
        {"src/main.py": "def entry():\n    return {'r': float('nan')}\n"},
        outputs=_out("r", data_type="number"),
    )
    assert result.returncode == 1
    assert result.error["message"].startswith("Output 'r' cannot be sent as JSON:")


def test_values_with_tolist_are_converted(run_step: RunStep) -> None:
    # The shape of numpy scalars and arrays, without needing numpy here.
    result = run_step(
        {
            "src/main.py": """
                class Scalar:
                    def tolist(self):
                        return 0.5
                def entry():
                    return {"r": Scalar(), "t": (1, 2)}
            """
        },
        outputs=[{"name": "r", "data_type": "number"}, {"name": "t", "data_type": "array"}],
    )
    assert result.returncode == 0, result.stderr
    assert result.finish["outputs"] == {"r": 0.5, "t": [1, 2]}


def test_file_output_whose_path_does_not_exist(run_step: RunStep) -> None:
    result = run_step(
        {"src/main.py": "def entry():\n    return {'model': {'path': 'nope.bin'}}\n"},
        outputs=_out("model", data_type="file"),
    )
    assert result.returncode == 1
    assert result.error["type"] == "OutputError"
    assert "Output 'model': the file" in result.error["message"]
    assert "nope.bin does not exist" in result.error["message"]
    assert result.double.outputs == {}


def test_file_output_that_is_not_a_path_dict(run_step: RunStep) -> None:
    result = run_step(
        {"src/main.py": "def entry():\n    return {'model': 'model.bin'}\n"},
        outputs=_out("model", data_type="file"),
    )
    assert result.returncode == 1
    assert result.error["message"] == (
        "Output 'model' is a file output: return {'path': '<file>'}, got str."
    )


def test_sys_exit_in_the_function_is_a_failure(run_step: RunStep) -> None:
    result = run_step({"src/main.py": "import sys\n\ndef entry():\n    sys.exit(4)\n"})
    assert result.returncode == 1
    assert result.error["type"] == "SystemExit"
    assert result.error["message"] == "sys.exit(4) was called"


def test_return_value_that_breaks_while_read_still_reports_a_failure(run_step: RunStep) -> None:
    result = run_step(
        {
            "src/main.py": """
                from collections.abc import Mapping
                class Broken(Mapping):
                    def __getitem__(self, key):
                        raise KeyError(key)
                    def __iter__(self):
                        raise RuntimeError("cannot iterate")
                    def __len__(self):
                        return 1
                def entry():
                    return Broken()
            """
        },
        outputs=_out("r"),
    )
    assert result.returncode == 1
    assert result.error["type"] == "RuntimeError"
    assert result.error["message"] == "The runner failed: cannot iterate"
    assert "cannot iterate" in result.error["traceback"]
