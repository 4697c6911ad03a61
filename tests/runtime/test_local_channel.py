"""The runner's local channel (gristmill.runtime._channel): a worker forked by the local
backend makes its start, logs and finish over it; once it is gone (the control service
restarted while the step ran) the runner goes on over HTTP with the execution token, as a
spawned worker does. The calls over a live channel are tested with the fork server
(tests/platform/executors/test_local_fork_server.py)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.runtime._control_double import PREFIX, ControlDouble, serve
from tests.runtime.conftest import RUNNER, runner_env, start_body, write_step


def run_with_channel(tmp_path: Path, double: ControlDouble, fd_value: str | None = None
                     ) -> subprocess.CompletedProcess[str]:
    double.start_body = start_body({"a": "x"}, [{"name": "out", "data_type": "string"}])
    step_dir = write_step(tmp_path / "step", {
        "src/main.py": "def entry(a):\n    return {'out': a * 2}\n"})
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.close()  # the control service that handed it out is gone
    try:
        with serve(double):
            return subprocess.run(
                RUNNER, cwd=tmp_path, pass_fds=(theirs.fileno(),), capture_output=True,
                text=True, timeout=120,
                env=runner_env(double.url, step_dir, tmp_path,
                               GRISTMILL_RUNTIME_FD=fd_value or str(theirs.fileno())))
    finally:
        theirs.close()


def test_a_closed_channel_falls_back_to_http(tmp_path: Path) -> None:
    double = ControlDouble()
    proc = run_with_channel(tmp_path, double)
    assert proc.returncode == 0, proc.stderr
    assert double.routes() == [
        "POST /api/v1/auth/refresh", f"POST {PREFIX}/start", f"POST {PREFIX}/finish"]
    assert double.finish is not None and double.finish["outputs"] == {"out": "xx"}


def test_a_descriptor_that_is_not_open_is_ignored_with_a_warning(tmp_path: Path) -> None:
    double = ControlDouble()
    proc = run_with_channel(tmp_path, double, fd_value="987")
    assert proc.returncode == 0, proc.stderr
    assert "GRISTMILL_RUNTIME_FD='987' ignored" in proc.stderr
    assert double.routes()[-1] == f"POST {PREFIX}/finish"
