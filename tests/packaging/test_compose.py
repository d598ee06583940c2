"""docker-compose.yml, the evaluation stack: its files, and the parts that run without a container.

The OpenLDAP entrypoint runs against Debian's slapd (the image's own package), and citygate runs
with the stack's command and configuration against it, as in the stack.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml
from deployfiles import (
    REPO,
    bind_mounts,
    citygate_command,
    compose,
    container_layout,
    dockerfile_instructions,
    exec_form,
    final_stage,
    free_port,
    http_get,
    one,
    option,
    parse_run,
    port_of,
    replace_values,
    set_options,
    wait_for,
)

STACK = compose()
SERVICES = STACK["services"]
CITYGATE = SERVICES["citygate"]
OPENLDAP = SERVICES["openldap"]
PROMETHEUS = SERVICES["prometheus"]
GRAFANA = SERVICES["grafana"]
COMMAND = CITYGATE["command"]


def substitute(value: str) -> str:
    """Compose's interpolation: ${NAME:-default} with the default (the tests set nothing), $$ as $."""
    value = re.sub(r"(?<!\$)\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), value)
    return value.replace("$$", "$")


def environment(service: dict) -> dict[str, str]:
    return {name: substitute(str(value)) for name, value in service.get("environment", {}).items()}


def published(service: dict) -> dict[int, tuple[str, int]]:
    """container port -> (host address, host port) of a service's `ports:`."""
    ports = {}
    for entry in service.get("ports", []):
        host, host_port, container_port = entry.split(":")
        ports[int(container_port)] = (host, int(host_port))
    return ports


def mount_target(service: dict, checkout_path: str) -> str:
    found = [target for source, target in bind_mounts(service) if source == (REPO / checkout_path).resolve()]
    assert len(found) == 1, f"{checkout_path} is not mounted once in the service"
    return found[0]


def test_the_stack_has_its_four_services() -> None:
    assert set(SERVICES) == {"citygate", "openldap", "prometheus", "grafana"}
    assert "version" not in STACK  # obsolete in the Compose Specification


def test_every_bind_mount_and_build_context_exists() -> None:
    for name, service in SERVICES.items():
        for source, target in bind_mounts(service):
            assert source.exists(), f"{name}: {source} does not exist"
            assert source.is_relative_to(REPO), f"{name}: {source} is outside the checkout"
            assert PurePosixPath(target).is_absolute(), f"{name}: {target}"
        build = service.get("build")
        if build:
            context = REPO / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name


def test_named_volumes_are_declared() -> None:
    declared = set(STACK["volumes"])
    used = set()
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used == declared


def test_every_port_is_published_on_loopback_only() -> None:
    for name, service in SERVICES.items():
        for host, _host_port in published(service).values():
            assert host == "127.0.0.1", f"{name} publishes on {host}"


def test_citygate_runs_the_image_with_the_stack_configuration() -> None:
    assert CITYGATE["build"]["context"] == "."
    parse_run(COMMAND)
    image_cmd = exec_form(one(final_stage(dockerfile_instructions()), "CMD").text)
    # The same ports, CA folder and log folder as the image's own command.
    for flag in ("--listen-host", "--listen-port", "--confdir"):
        assert option(COMMAND, flag) == option(image_cmd, flag), flag
    assert set_options(COMMAND) == set_options(image_cmd)
    assert option(COMMAND, "--config") == mount_target(CITYGATE, "deploy/compose/citygate.yaml")
    ports = published(CITYGATE)
    assert set(ports) == {
        int(option(COMMAND, "--listen-port")),
        port_of(set_options(COMMAND)["citygate_metrics_listen"]),
    }
    volumes = {target for _source, target in (v.split(":")[:2] for v in CITYGATE["volumes"])}
    assert option(COMMAND, "--confdir") in volumes
    assert set_options(COMMAND)["citygate_audit_directory"] in volumes
    # Every file the configuration names comes from the checkout (README: edit a grant there).
    assert mount_target(CITYGATE, "config/grants") == "/etc/citygate/grants"
    assert mount_target(CITYGATE, "config/sites.yaml") == "/etc/citygate/sites.yaml"


def stack_config(root: Path) -> Path:
    """The citygate configuration as the container sees it: the image's files, then the mounts."""
    container_layout(root, CITYGATE, image=True)
    return root / option(COMMAND, "--config").lstrip("/")


def test_the_stack_configuration_passes_citygate_check(tmp_path: Path) -> None:
    config = stack_config(tmp_path)
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    env = {**os.environ, **environment(CITYGATE)}
    assert document["directory"]["bind_password_env"] in environment(CITYGATE)
    result = subprocess.run(
        [*citygate_command(), "check", "--no-directory", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # It asks the stack's OpenLDAP, on the port its image exposes.
    expose = one(
        final_stage(dockerfile_instructions(REPO / OPENLDAP["build"]["context"] / "Dockerfile")), "EXPOSE"
    )
    assert document["directory"]["servers"] == [f"ldap://openldap:{expose.text}"]
    assert document["metrics"]["listen"] == set_options(COMMAND)["citygate_metrics_listen"]


def test_both_services_know_the_same_service_password() -> None:
    assert environment(CITYGATE)["CITYGATE_LDAP_PASSWORD"] == environment(OPENLDAP)["CITYGATE_LDAP_PASSWORD"]


def test_prometheus_configuration_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: run tools/system-deps (Debian's prometheus package)", pytrace=False)
    container_layout(tmp_path, PROMETHEUS)
    config = tmp_path / "etc/prometheus/prometheus.yml"
    result = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    rules = (config.parent / document["rule_files"][0]).resolve()
    assert rules.read_bytes() == (REPO / "config/prometheus-alerts.yml").read_bytes()
    (job,) = document["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    metrics_port = port_of(set_options(COMMAND)["citygate_metrics_listen"])
    assert job["static_configs"][0]["targets"] == [f"citygate:{metrics_port}"]


def grafana_file(relative: str) -> dict:
    return yaml.safe_load(
        (REPO / "deploy/compose/grafana/provisioning" / relative).read_text(encoding="utf-8")
    )


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    assert mount_target(GRAFANA, "deploy/compose/grafana/provisioning") == "/etc/grafana/provisioning"
    (source,) = grafana_file("datasources/prometheus.yml")["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"  # the image's port, on the stack's network
    (provider,) = grafana_file("dashboards/citygate.yml")["providers"]
    dashboard = mount_target(GRAFANA, "config/grafana-dashboard.json")
    assert str(PurePosixPath(dashboard).parent) == provider["options"]["path"]
    assert environment(GRAFANA)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == dashboard
    json.loads((REPO / "config/grafana-dashboard.json").read_text(encoding="utf-8"))


def datasource_uids(node: object) -> list[str]:
    found = []
    if isinstance(node, dict):
        source = node.get("datasource")
        if isinstance(source, dict) and "uid" in source:
            found.append(str(source["uid"]))
        elif isinstance(source, str):
            found.append(source)
        for key, value in node.items():
            if key != "__inputs":
                found += datasource_uids(value)
    elif isinstance(node, list):
        for value in node:
            found += datasource_uids(value)
    return found


def test_the_dashboard_finds_its_data_source_when_provisioned() -> None:
    """Provisioning does not fill in `__inputs` (that is the import dialog's work): a `${DS_...}`
    the dashboard names must be one of its own variables of type datasource."""
    dashboard = json.loads((REPO / "config/grafana-dashboard.json").read_text(encoding="utf-8"))
    (source,) = grafana_file("datasources/prometheus.yml")["datasources"]
    variables = {
        variable["name"]
        for variable in dashboard.get("templating", {}).get("list", [])
        if variable.get("type") == "datasource"
    }
    for uid in set(datasource_uids(dashboard)):
        name = re.fullmatch(r"\$\{(\w+)\}|\$(\w+)", uid)
        if name:
            assert (name.group(1) or name.group(2)) in variables, (
                f"the dashboard names data source {uid}, which a provisioned dashboard cannot resolve: "
                f'add {{"name": "{name.group(1) or name.group(2)}", "type": "datasource", "query": "prometheus"}} '
                "to templating.list"
            )
        else:
            assert uid in {source["uid"], "-- Grafana --", "grafana"}, uid


def test_the_dashboard_asks_for_its_data_source_when_imported() -> None:
    """Grafana's import dialog fills in `${DS_...}` from `__inputs`: each data source the
    dashboard names by variable is one the dialog asks for (a Prometheus)."""
    dashboard = json.loads((REPO / "config/grafana-dashboard.json").read_text(encoding="utf-8"))
    inputs = {item["name"]: item for item in dashboard.get("__inputs", [])}
    for uid in set(datasource_uids(dashboard)):
        name = re.fullmatch(r"\$\{(\w+)\}|\$(\w+)", uid)
        if name:
            wanted = inputs.get(name.group(1) or name.group(2))
            assert wanted is not None, f"{uid}: the import dialog would not ask for it; add it to __inputs"
            assert (wanted["type"], wanted["pluginId"]) == ("datasource", "prometheus")
    required = {(item["type"], item["id"]) for item in dashboard.get("__requires", [])}
    assert ("datasource", "prometheus") in required


# --- the stack's OpenLDAP and citygate, run -----------------------------------------------------


def proxy_status(port: int, url: str, user: str | None = None) -> int:
    host = url.split("/")[2]
    headers = {"Host": host}
    if user:
        token = base64.b64encode(f"{user}:{user}-pass".encode()).decode()
        headers["Proxy-Authorization"] = f"Basic {token}"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.request("GET", url, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.mark.e2e
def test_the_stack_openldap_serves_the_demo_city_to_citygate(tmp_path: Path) -> None:
    """The openldap image's entrypoint and files, with Debian's slapd; then citygate with the
    stack's command and configuration, pointed at it instead of the `openldap` host name."""
    if shutil.which("slapd") is None and not Path("/usr/sbin/slapd").exists():
        pytest.fail("slapd is missing: run tools/system-deps", pytrace=False)
    context = REPO / OPENLDAP["build"]["context"]
    image = dockerfile_instructions(context / "Dockerfile")
    entrypoint = exec_form(one(final_stage(image), "ENTRYPOINT").text)[0]
    copies = {
        text.split()[1]: context / text.split()[0] for text in (i.text for i in image if i.keyword == "COPY")
    }
    ldap_root = container_layout(tmp_path / "ldap", OPENLDAP)
    ldap_port = free_port()
    env = {
        **os.environ,
        **environment(OPENLDAP),
        "SLAPD_CONF_TEMPLATE": str(copies["/etc/ldap/citygate-slapd.conf"]),
        "LDAP_DATA_DIR": str(tmp_path / "ldap-data"),
        "LDAP_RUN_DIR": str(tmp_path / "run"),
        "LDIF_DIR": str(ldap_root / "ldif"),
        "LDAP_URLS": f"ldap://127.0.0.1:{ldap_port}/",
        "LDAP_LOG_LEVEL": "0",
        "SLAPD_USER": "",
    }
    slapd_log = (tmp_path / "slapd.log").open("wb")
    slapd = subprocess.Popen(
        ["sh", str(copies[entrypoint])], env=env, stdout=slapd_log, stderr=subprocess.STDOUT
    )
    citygate = None
    try:
        kind, health = OPENLDAP["healthcheck"]["test"]
        assert kind == "CMD-SHELL"
        health = substitute(health).replace("ldap://127.0.0.1 ", f"ldap://127.0.0.1:{ldap_port} ")

        def ldap_healthy() -> bool:
            assert slapd.poll() is None, (tmp_path / "slapd.log").read_text(errors="replace")
            return (
                subprocess.run(["sh", "-c", health], env=env, capture_output=True, check=False).returncode
                == 0
            )

        wait_for(ldap_healthy, 30, "the openldap healthcheck")

        config = stack_config(tmp_path / "citygate")
        text = config.read_text(encoding="utf-8")
        assert "ldap://openldap:389" in text
        config.write_text(
            text.replace("ldap://openldap:389", f"ldap://127.0.0.1:{ldap_port}"), encoding="utf-8"
        )
        citygate_env = {**os.environ, **environment(CITYGATE)}
        check = subprocess.run(
            [*citygate_command(), "check", "--config", str(config)],
            capture_output=True,
            text=True,
            env=citygate_env,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert "every grant would work now against the directory" in check.stdout

        proxy_port, metrics_port = free_port(), free_port()
        argv = replace_values(
            COMMAND,
            {
                "--listen-host": "127.0.0.1",
                "--listen-port": str(proxy_port),
                "--config": str(config),
                "--confdir": str(tmp_path / "ca"),
                "citygate_audit_directory": str(tmp_path / "log"),
                "citygate_metrics_listen": f"127.0.0.1:{metrics_port}",
            },
        )
        citygate_log = (tmp_path / "citygate.log").open("wb")
        citygate = subprocess.Popen(
            [*citygate_command(), *argv], env=citygate_env, stdout=citygate_log, stderr=subprocess.STDOUT
        )
        citygate_log.close()
        wait_for(
            lambda: citygate.poll() is not None or http_get(f"http://127.0.0.1:{metrics_port}/metrics")[0],
            30,
            "citygate's metrics listener",
        )
        assert citygate.poll() is None, (tmp_path / "citygate.log").read_text(errors="replace")
        facebook = "http://www.facebook.com/"
        assert proxy_status(proxy_port, facebook) == 407
        assert proxy_status(proxy_port, facebook, "mnguyen") == 403  # signed in over LDAP: no grant
        assert proxy_status(proxy_port, "http://x.com/", "jlee") == 403  # a site jlee's grant does not name
        assert proxy_status(proxy_port, facebook, "bjones") == 403  # disabled: a page, not a 407
        # Every worker reports its readiness within a few seconds of starting.
        wait_for(
            lambda: http_get(f"http://127.0.0.1:{metrics_port}/readyz")[0] == 200, 30, "/readyz to answer 200"
        )
    finally:
        if citygate is not None:
            stop(citygate)
        stop(slapd)
        slapd_log.close()
