"""Deploy the getting-started pipeline on a running environment (idempotent).

Creates the step `get-started-hello` from ./src, the pipeline of the same name, runs it
once, and exposes it as the endpoint `get-started`. Reads GRISTMILL_ENVIRONMENT_URL and
GRISTMILL_SDK_TOKEN (the lines `gristmill up` prints / saves in credentials.env).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from gristmill import Gristmill, Input, Output

HERE = Path(__file__).parent
NAME = "get-started-hello"
ENDPOINT = "get-started"


def wait_ready(sdk: Gristmill, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(f"{sdk.base_environment_url}/readyz", timeout=2).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def access_token(sdk: Gristmill) -> str:
    response = httpx.post(f"{sdk.base_control_api_url}/auth/refresh",
                          json={"refresh_token": sdk.settings.sdk_token})
    response.raise_for_status()
    return str(response.json()["access_token"])


def main() -> None:
    sdk = Gristmill(progress=False)
    wait_ready(sdk)
    if sdk.get_pipeline(NAME) is None:
        sdk.create_pipeline(
            pipeline_name=NAME, function_path="src/hello.py", function_name="hello",
            inputs=[Input(name="name", data_type="string", is_required=False,
                          default_value="world")],
            outputs=[Output(name="greeting", data_type="string"),
                     Output(name="days_since_2000", data_type="number")],
            container_config={"local_folder": str(HERE), "requirements_path": ""},
        )
        print(f"Created the pipeline {NAME}")
    result = sdk.run_pipeline(pipeline_name=NAME, inputs={"name": "Gristmill"})
    print(f"Ran it: {result['outputs']} (execution {result['execution_id']})")
    # deployments over the HTTP API (the same calls craft-ai-sdk's create_deployment makes)
    api = httpx.Client(base_url=sdk.base_environment_api_url, timeout=60, headers={
        "Authorization": f"Bearer {access_token(sdk)}"})
    if api.get(f"/deployments/{ENDPOINT}").status_code == 404:
        api.post("/endpoints", json={"pipeline_name": NAME, "name": ENDPOINT,
                                     "mode": "elastic"}).raise_for_status()
    token = api.get(f"/deployments/{ENDPOINT}").json()["endpoint_token"]
    print(f"\nThe endpoint {ENDPOINT} is up. Call it:\n"
          f"  curl -X POST {sdk.base_environment_url}/endpoints/{ENDPOINT} \\\n"
          f"       -H 'Authorization: EndpointToken {token}' \\\n"
          "       -H 'Content-Type: application/json' -d '{\"name\": \"you\"}'\n")


if __name__ == "__main__":
    main()
