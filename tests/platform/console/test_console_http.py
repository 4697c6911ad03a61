"""The console over HTTP, as a browser sends requests: who may see what, CSRF, sessions,
and that every page renders from the same services as the API."""

from __future__ import annotations

import hashlib

import httpx

from tests.platform.console.conftest import BROWSER, Console
from tests.platform.helpers import run_admin


def test_root_answers_api_clients_json_and_browsers_the_console(gristmill_env) -> None:
    as_api = httpx.get(gristmill_env.url + "/")
    assert as_api.status_code == 200
    assert as_api.json()["api"] == f"{gristmill_env.url}/api/v1"
    signed_out = httpx.get(gristmill_env.url + "/", headers=BROWSER)
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == "/console/sign-in?next=%2F"


def test_static_files_are_served_and_any_other_name_is_a_404(gristmill_env) -> None:
    served = httpx.get(gristmill_env.url + "/console/static/console.js")
    assert served.status_code == 200 and served.headers["content-type"].startswith(
        "text/javascript")
    # names that cannot be a file of the static folder: a null byte or a name too long
    # for the file system (ValueError and OSError, a 500, before), a folder, a way out
    for name in ("a%00b", "console.js%00.png", "x" * 300, "a/" * 3000 + "b", "vendor",
                 "vendor/", "%2e%2e/web.py", "..%2fweb.py", "nothing.js", "%ff"):
        response = httpx.get(f"{gristmill_env.url}/console/static/{name}")
        assert response.status_code == 404, (name[:40], response.text[:200])
        assert response.json()["name"] == "NotFound"
        assert response.headers["x-request-id"]


def test_sign_in_refuses_a_wrong_token_with_the_api_message(gristmill_env) -> None:
    response = httpx.post(gristmill_env.url + "/console/sign-in",
                          data={"token": "gm_nope_nope", "next": "/"}, headers=BROWSER)
    assert response.status_code == 401
    assert "Invalid refresh token" in response.text
    assert "set-cookie" not in response.headers


def test_session_cookie_is_httponly_lax_and_only_its_hash_is_stored(gristmill_env) -> None:
    response = httpx.post(gristmill_env.url + "/console/sign-in",
                          data={"token": gristmill_env.sdk_token, "next": "/console/pipelines"},
                          headers=BROWSER)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/pipelines"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    session_id = cookie.split(";", 1)[0].split("=", 1)[1]
    assert gristmill_env.sdk_token not in cookie
    import sqlalchemy

    url = gristmill_env.database.url
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as connection:
        stored = connection.execute(sqlalchemy.text(
            "SELECT id_hash FROM console_sessions")).scalars().all()
    engine.dispose()
    assert hashlib.sha256(session_id.encode()).hexdigest() in stored
    assert session_id not in stored


def test_next_never_leaves_the_site(gristmill_env) -> None:
    response = httpx.post(gristmill_env.url + "/console/sign-in",
                          data={"token": gristmill_env.sdk_token, "next": "//evil.example"},
                          headers=BROWSER)
    assert response.headers["location"] == "/"


def test_sign_in_from_another_site_is_refused(gristmill_env) -> None:
    response = httpx.post(gristmill_env.url + "/console/sign-in",
                          data={"token": gristmill_env.sdk_token, "next": "/"},
                          headers={**BROWSER, "origin": "https://evil.example"})
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


def test_every_page_renders_with_the_security_headers(console: Console, echo_pipeline) -> None:
    pages = ["/", "/console/pipelines", f"/console/pipelines/{echo_pipeline}",
             f"/console/pipelines/{echo_pipeline}/deploy", "/console/deployments",
             "/console/executions", "/console/monitoring/pipeline-metrics",
             "/console/monitoring/resource-metrics", "/console/data-store",
             "/console/environment-variables", "/console/settings"]
    for page in pages:
        response = console.get(page)
        assert response.status_code == 200, (page, response.text[:500])
        csp = response.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert "<script>" not in response.text, page


def test_signed_out_pages_and_actions_are_refused(gristmill_env, echo_pipeline) -> None:
    page = httpx.get(f"{gristmill_env.url}/console/settings", headers=BROWSER)
    assert page.status_code == 303
    assert page.headers["location"].startswith("/console/sign-in?next=")
    action = httpx.post(f"{gristmill_env.url}/console/environment-variables",
                        data={"name": "X", "value": "1"}, headers=BROWSER)
    assert action.status_code == 401
    htmx = httpx.get(f"{gristmill_env.url}/console/executions",
                     headers={**BROWSER, "hx-request": "true"})
    assert htmx.status_code == 401 and htmx.headers["hx-redirect"] == "/console/sign-in"


def test_a_state_change_without_the_csrf_token_is_refused(console: Console, unique) -> None:
    name = f"CSRF_{unique.upper()}"
    response = console.http.post("/console/environment-variables",
                                 data={"name": name, "value": "1"})
    assert response.status_code == 403
    assert "CSRF" in response.text
    wrong = console.http.post("/console/environment-variables",
                              data={"name": name, "value": "1", "csrf_token": "x" * 64})
    assert wrong.status_code == 403
    assert name not in console.get("/console/environment-variables").text
    ok = console.post("/console/environment-variables", {"name": name, "value": "1"})
    assert ok.status_code == 303
    assert name in console.get("/console/environment-variables").text


def test_environment_variables_hidden_until_revealed(console: Console, unique) -> None:
    name, value = f"SECRET_{unique.upper()}", f"value-{unique}"
    console.post("/console/environment-variables", {"name": name, "value": value})
    page = console.get("/console/environment-variables").text
    assert name in page and value not in page
    revealed = console.get(f"/console/environment-variables/{name}/value")
    assert value in revealed.text
    console.post("/console/environment-variables", {"name": name, "value": "edited"})
    assert "edited" in console.get(f"/console/environment-variables/{name}/value").text
    assert console.post(f"/console/environment-variables/{name}/delete").status_code == 303
    assert name not in console.get("/console/environment-variables").text


def test_revoking_the_sdk_token_ends_its_console_sessions(gristmill_env, unique) -> None:
    created = run_admin(gristmill_env.settings, "create_token", "admin@localhost",
                        name=f"console-{unique}")
    console = Console(gristmill_env.url, created.plaintext)
    assert console.get("/console/settings").status_code == 200
    run_admin(gristmill_env.settings, "revoke_token", created.token.id)
    assert console.get("/console/settings").status_code == 303


def test_sign_out_ends_the_session(gristmill_env) -> None:
    console = Console(gristmill_env.url, gristmill_env.sdk_token)
    cookie = dict(console.http.cookies)
    assert console.post("/console/sign-out").status_code == 303
    again = httpx.get(f"{gristmill_env.url}/console/settings", cookies=cookie, headers=BROWSER)
    assert again.status_code == 303


def test_deploy_form_creates_an_endpoint_that_answers(console: Console, gristmill_env,
                                                      echo_pipeline, unique) -> None:
    name = f"console-ep-{unique}"
    bad = console.post(f"/console/pipelines/{echo_pipeline}/deploy",
                       {"name": name, "execution_rule": "periodic", "mode": "elastic",
                        "schedule": "not a cron", "in.text.source": "constant",
                        "in.text.value": "x", "out.text.destination": "none"})
    assert bad.status_code == 400
    assert "Invalid schedule" in bad.text  # the service's own message
    created = console.post(f"/console/pipelines/{echo_pipeline}/deploy",
                           {"name": name, "execution_rule": "endpoint", "mode": "elastic",
                            "in.text.source": "endpoint", "in.text.value": "",
                            "out.text.destination": "endpoint", "out.text.value": ""})
    assert created.status_code == 303, created.text
    page = console.get(created.headers["location"])
    assert page.status_code == 200
    token = page.text.split('<code id="token-value" class="hidden">', 1)[1].split("<", 1)[0]
    answer = httpx.post(f"{gristmill_env.url}/endpoints/{name}", json={"text": "hi"},
                        headers={"Authorization": f"EndpointToken {token}"}, timeout=120,
                        follow_redirects=True)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"]["text"] == "HI"

    rotated = console.post(f"/console/deployments/{name}/rotate-token",
                           headers={"hx-request": "true"})
    new_token = rotated.text.split('<code id="token-value" class="">', 1)[1].split("<", 1)[0]
    assert new_token != token
    refused = httpx.post(f"{gristmill_env.url}/endpoints/{name}", json={"text": "hi"},
                         headers={"Authorization": f"EndpointToken {token}"})
    assert refused.status_code in (401, 403)

    execution_page = console.get(f"/console/executions?deployment={name}")
    assert execution_page.status_code == 200 and name in execution_page.text
    assert console.post(f"/console/deployments/{name}/enabled",
                        {"enable": "false"}).status_code == 303
    assert ">Enable<" in console.get(f"/console/deployments/{name}").text
    assert console.post(f"/console/deployments/{name}/delete").status_code == 303
    assert console.get(f"/console/deployments/{name}").status_code == 404


def test_a_viewer_signed_in_reads_but_changes_nothing(gristmill_env, console: Console,
                                                      unique) -> None:
    email = f"viewer-{unique}@example.com"
    run_admin(gristmill_env.settings, "create_user", "viewer", email, is_viewer=True)
    sdk = run_admin(gristmill_env.settings, "create_token", email, name="console").plaintext
    viewer = Console(gristmill_env.url, sdk)
    path = f"viewer/{unique}/kept.txt"
    with gristmill_env.client() as api:
        signed = api.get("/data-store/upload", params={"path_to_object": path}).json()
    assert httpx.post(signed["signed_url"], data=signed["fields"],
                      files={"file": ("kept.txt", b"kept")}).status_code == 204
    refused = "is not allowed for a viewer: viewers may only read"
    try:
        # reading is theirs, but for environment variables' values (often secrets), which
        # the API does not show them either
        # the pages leave out what they may not post
        folder = viewer.get(f"/console/data-store?prefix=viewer/{unique}/")
        assert folder.status_code == 200 and "kept.txt" in folder.text
        assert "Drop files here" not in folder.text and "Delete" not in folder.text
        as_admin = console.get(f"/console/data-store?prefix=viewer/{unique}/").text
        assert "Drop files here" in as_admin and "Delete" in as_admin
        secret = f"SECRET_{unique.upper()}"
        console.post("/console/environment-variables", {"name": secret, "value": "s3cr3t"})
        page = viewer.get("/console/environment-variables")
        assert page.status_code == 200 and secret in page.text
        assert "Reveal" not in page.text and "New variable" not in page.text
        assert "Reveal" in console.get("/console/environment-variables").text
        value = viewer.get(f"/console/environment-variables/{secret}/value")
        assert value.status_code == 403 and "s3cr3t" not in value.text
        assert "Environment variable values are shown to admins and members only" in value.text
        # what changes the platform is not, whatever the service behind it checks
        name = f"VIEWER_{unique.upper()}"
        posted = viewer.post("/console/environment-variables", {"name": name, "value": "1"})
        assert posted.status_code == 403
        assert f"POST /console/environment-variables {refused}" in posted.text
        assert name not in console.get("/console/environment-variables").text
        deleted = viewer.post("/console/data-store/delete", {"path": path})
        assert deleted.status_code == 403 and refused in deleted.text
        assert console.get(f"/console/data-store/info?path={path}").status_code == 200
        upload = viewer.http.post("/console/data-store/upload-url",
                                  json={"path": f"viewer/{unique}/new.bin"},
                                  headers={"x-csrf-token": viewer.csrf, "origin": viewer.url})
        assert upload.status_code == 403
        assert upload.json()["message"] == (
            f"POST /console/data-store/upload-url {refused}")
        # a page that is only a form they may not post is refused, not shown
        form = viewer.get(f"/console/pipelines/p-{unique}/deploy")
        assert form.status_code == 403 and 'id="deploy-form"' not in form.text
        assert f"The form at /console/pipelines/{{name}}/deploy {refused}" in form.text
        # their own SDK tokens and signing out stay theirs
        assert viewer.post("/console/settings/tokens", {"name": "mine"}).status_code == 200
        assert viewer.post("/console/sign-out").status_code == 303
    finally:
        viewer.http.close()
