"""Our SDK against the real server: a deployment's execution timeout
(docs/deployments.md#execution-timeout) is set at creation, changed and removed by
update_deployment, and sent only when given."""

from __future__ import annotations

import pytest

from gristmill import Gristmill, Input, Output
from gristmill.errors import BadRequestError

CODE = '''
def multiply(number1: float, number2: float) -> dict:
    return {"result": number1 * number2}
'''


@pytest.fixture
def sdk(gristmill_env):
    with Gristmill(environment_url=gristmill_env.url, sdk_token=gristmill_env.sdk_token,
                   progress=False) as client:
        yield client


def test_execution_timeout_at_creation_and_update(sdk, tmp_path, unique) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text(CODE)
    name = f"sdk-timeout-{unique}"
    sdk.create_pipeline(pipeline_name=name, function_path="src/main.py",
                        function_name="multiply",
                        inputs=[Input("number1", "number"), Input("number2", "number")],
                        outputs=[Output("result", "number")],
                        container_config={"local_folder": str(tmp_path)})

    # the documentation's example
    sdk.create_deployment(pipeline_name=name, deployment_name=f"ep-{unique}",
                          execution_rule="endpoint", execution_timeout_s=30)
    assert sdk.get_deployment(f"ep-{unique}")["execution_timeout_s"] == 30
    sdk.create_deployment(name, f"plain-{unique}", "endpoint")
    assert sdk.get_deployment(f"plain-{unique}")["execution_timeout_s"] is None
    with pytest.raises(BadRequestError):
        sdk.create_deployment(name, f"bad-{unique}", "endpoint", execution_timeout_s=0)

    updated = sdk.update_deployment(f"ep-{unique}", execution_timeout_s=60)
    assert updated["execution_timeout_s"] == 60
    # left out: kept
    assert sdk.update_deployment(f"ep-{unique}", description="x")["execution_timeout_s"] == 60
    # None: no limit any more
    assert sdk.update_deployment(f"ep-{unique}", execution_timeout_s=None)[
        "execution_timeout_s"] is None
    assert sdk.get_deployment(f"ep-{unique}")["execution_timeout_s"] is None
    sdk.update_deployment(f"plain-{unique}", execution_timeout_s=3600)
    assert sdk.get_deployment(f"plain-{unique}")["execution_timeout_s"] == 3600
