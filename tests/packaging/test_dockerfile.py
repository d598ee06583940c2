"""The Dockerfile, read statically (no container engine here), and its command run from the venv."""

from __future__ import annotations

import http.client
import http.server
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from deployfiles import (
    REPO,
    citygate_command,
    dockerfile_instructions,
    exec_form,
    final_stage,
    free_port,
    healthcheck_command,
    http_get,
    image_layout,
    one,
    option,
    parse_run,
    port_of,
    readme_section,
    replace_values,
    set_options,
    wait_for,
)

INSTRUCTIONS = dockerfile_instructions()
FINAL = final_stage(INSTRUCTIONS)
CMD = exec_form(one(FINAL, "CMD").text)
METRICS_LISTEN = "citygate_metrics_listen"
AUDIT_DIRECTORY = "citygate_audit_directory"


def build_args() -> dict[str, str]:
    args = {}
    for instruction in INSTRUCTIONS:
        if instruction.keyword == "ARG" and "=" in instruction.text:
            name, value = instruction.text.split("=", 1)
            args[name] = value
    return args


def exposed() -> set[int]:
    return {int(port.split("/")[0]) for port in one(FINAL, "EXPOSE").text.split()}


def test_two_stages_on_the_slim_python_312_image() -> None:
    froms = [instruction.text for instruction in INSTRUCTIONS if instruction.keyword == "FROM"]
    assert len(froms) == 2
    assert re.search(r"\bAS build$", froms[0], re.I)
    for text in froms:
        image = text.split()[0]
        for name, value in build_args().items():
            image = image.replace(f"${{{name}}}", value)
        assert re.fullmatch(r"python:3\.12(\.\d+)?-slim(-[a-z]+)?", image), image


def test_the_final_stage_holds_only_the_runtime() -> None:
    copies = [i.text for i in FINAL if i.keyword == "COPY"]
    from_build = [text for text in copies if text.startswith("--from=build")]
    assert from_build == ["--from=build /opt/citygate /opt/citygate"]
    sources = {text.split()[0] for text in copies if not text.startswith("--from")}
    # The demo configuration and its directory: data, never source code or build files.
    assert sources == {"config", "directory/demo.ldif"}
    for instruction in FINAL:
        if instruction.keyword == "RUN":
            assert "pip" not in instruction.text, "nothing is installed in the final stage"


def test_it_installs_citygate_the_way_the_makefile_and_the_readme_do() -> None:
    build = [i for i in INSTRUCTIONS if i.stage == 0]
    runs = " && ".join(i.text for i in build if i.keyword == "RUN")
    assert re.search(r"/opt/citygate/bin/pip install -c constraints\.txt \.(\s|$)", runs), runs
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    # The Makefile installs the same project folder (editable, with the test extra), through
    # tools/make-venv, which builds the venv once under a lock.
    assert "tools/make-venv" in makefile
    assert re.search(
        r"pip\" install .*-c constraints\.txt -e '\.\[test\]'",
        (REPO / "tools" / "make-venv").read_text(encoding="utf-8"),
    )
    vm = readme_section("Installing on a VM (systemd)")
    assert "/opt/citygate/bin/pip install -c constraints.txt ." in vm
    # Everything `pip install .` needs is copied into the build stage first.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    needed = {
        "pyproject.toml",
        pyproject["project"]["readme"],
        "constraints.txt",
        *pyproject["project"]["license-files"],
    }
    needed |= set(pyproject["tool"]["setuptools"]["package-dir"].values())
    copied: set[str] = set()
    for instruction in build:
        if instruction.keyword == "COPY":
            *sources, _target = instruction.text.split()
            copied |= set(sources)
    assert needed <= copied, f"the build stage does not copy {sorted(needed - copied)}"


def test_it_runs_as_an_unprivileged_user() -> None:
    user = one(FINAL, "USER").text
    assert user not in {"root", "0"} and not user.startswith("0:")
    run = " ".join(i.text for i in FINAL if i.keyword == "RUN")
    assert re.search(rf"useradd .*--uid 10001 .*{user}\b", run)


def test_it_exposes_the_proxy_and_metrics_ports_of_its_command() -> None:
    parse_run(CMD)
    proxy_port = int(option(CMD, "--listen-port"))
    metrics = set_options(CMD)[METRICS_LISTEN]
    assert metrics.startswith("0.0.0.0:"), "the metrics listener must be reachable from outside"
    assert exposed() == {proxy_port, port_of(metrics)} == {8080, 9090}
    assert option(CMD, "--listen-host") == "0.0.0.0"


def test_the_healthcheck_asks_healthz_on_the_metrics_port() -> None:
    command = healthcheck_command(INSTRUCTIONS)
    urls = re.findall(r"http://[^'\"]+", " ".join(command))
    assert urls == [f"http://127.0.0.1:{port_of(set_options(CMD)[METRICS_LISTEN])}/healthz"]


def test_config_ca_and_access_log_are_volumes() -> None:
    volumes = set(exec_form(one(FINAL, "VOLUME").text))
    config = option(CMD, "--config")
    assert config and config.startswith("/etc/citygate/")
    assert {"/etc/citygate", option(CMD, "--confdir"), set_options(CMD)[AUDIT_DIRECTORY]} == volumes
    # A named volume starts with the image's folder and its owner: they must be citygate's, or
    # the unprivileged user could not create its CA or write its log there.
    run = " ".join(i.text for i in FINAL if i.keyword == "RUN")
    for folder in (option(CMD, "--confdir"), set_options(CMD)[AUDIT_DIRECTORY]):
        assert re.search(rf"install -d -o citygate -g citygate -m 07\d0 [^&]*{re.escape(folder)}", run), (
            folder
        )


def test_the_image_holds_the_configuration_its_command_names(tmp_path: Path) -> None:
    root = image_layout(tmp_path)
    config = root / option(CMD, "--config").lstrip("/")
    assert config.is_file()
    result = subprocess.run(
        [*citygate_command(), "check", "--no-directory", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"ok\n" if code == 200 else b"no\n")

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def health_server(status: int) -> Iterator[int]:
    handler = type("Handler", (_Health,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def run_healthcheck(port: int) -> int:
    """The image's HEALTHCHECK command, against 127.0.0.1:port, with this interpreter."""
    command = healthcheck_command(INSTRUCTIONS)
    assert command[0] == "python"
    metrics_port = port_of(set_options(CMD)[METRICS_LISTEN])
    command = [sys.executable, *(arg.replace(f":{metrics_port}/", f":{port}/") for arg in command[1:])]
    # An HTTP proxy in the environment must not be used for it.
    env = {"http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin"}
    return subprocess.run(command, env=env, capture_output=True, timeout=30, check=False).returncode


def test_the_healthcheck_passes_on_200_and_fails_otherwise() -> None:
    with health_server(200) as port:
        assert run_healthcheck(port) == 0
    with health_server(503) as port:
        assert run_healthcheck(port) != 0
    assert run_healthcheck(free_port()) != 0


@pytest.mark.e2e
def test_the_image_command_serves_the_proxy_and_passes_the_healthcheck(tmp_path: Path) -> None:
    """The image's CMD, with its paths and ports moved into tmp_path, run from this venv."""
    root = image_layout(tmp_path / "root")
    proxy_port, metrics_port = free_port(), free_port()
    argv = replace_values(
        CMD,
        {
            "--listen-host": "127.0.0.1",
            "--listen-port": str(proxy_port),
            "--config": str(root / option(CMD, "--config").lstrip("/")),
            "--confdir": str(tmp_path / "ca"),
            AUDIT_DIRECTORY: str(tmp_path / "log"),
            METRICS_LISTEN: f"127.0.0.1:{metrics_port}",
        },
    )
    log = (tmp_path / "citygate.log").open("wb")
    process = subprocess.Popen([*citygate_command(), *argv], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(
            lambda: process.poll() is not None or http_get(f"http://127.0.0.1:{metrics_port}/metrics")[0],
            30,
            "the metrics listener",
        )
        assert process.poll() is None, (tmp_path / "citygate.log").read_text(errors="replace")
        status, body = http_get(f"http://127.0.0.1:{metrics_port}/healthz")
        assert status == 200, f"GET /healthz answered {status} {body[:200]!r}"
        assert run_healthcheck(metrics_port) == 0
        connection = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
        connection.request("GET", "http://www.facebook.com/", headers={"Host": "www.facebook.com"})
        assert connection.getresponse().status == 407
        connection.close()
        assert (tmp_path / "ca" / "mitmproxy-ca-cert.pem").is_file()
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
