"""The README's install, rollout and browser sections agree with the packaging files."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from deployfiles import (
    REPO,
    citygate_command,
    compose,
    dockerfile_instructions,
    exec_form,
    final_stage,
    kubernetes_object,
    one,
    option,
    port_of,
    readme_section,
    readme_table,
    set_options,
    unit_values,
)

SECTIONS = (
    "Installing on a VM (systemd)",
    "Installing on a cluster (Kubernetes)",
    "Evaluation stack (docker compose)",
    "Rolling out department by department",
    "Browsers and the proxy's CA certificate",
)


@pytest.mark.parametrize("title", SECTIONS)
def test_the_section_is_there(title: str) -> None:
    assert len(readme_section(title).split()) > 50


def ports_table() -> dict[str, tuple[str, str]]:
    rows = readme_table(readme_section("Installing on a VM (systemd)"), "install")
    return {row[0]: (row[1], row[2]) for row in rows}


def first_number(text: str) -> int:
    return int(re.search(r"\d+", text).group(0))


def test_the_ports_table_agrees_with_every_install() -> None:
    table = ports_table()
    assert len(table) == 3
    vm = next(value for key, value in table.items() if "deploy/systemd/citygate.service" in key)
    image = next(value for key, value in table.items() if "Dockerfile" in key and "docker-compose.yml" in key)
    cluster = next(value for key, value in table.items() if "deploy/kubernetes/" in key)

    # The VM: the unit's --listen-port, and the copied config's metrics.listen.
    (exec_start,) = unit_values("ExecStart")
    assert first_number(vm[0]) == int(option(exec_start.split(), "--listen-port"))
    config = yaml.safe_load((REPO / "config/citygate.yaml").read_text(encoding="utf-8"))
    assert vm[1] == str(config["metrics"]["listen"])
    assert "citygate_metrics_listen" not in exec_start

    # The image and the compose stack.
    final = final_stage(dockerfile_instructions())
    cmd = exec_form(one(final, "CMD").text)
    exposed = {int(p) for p in one(final, "EXPOSE").text.split()}
    proxy_port, metrics_port = (
        int(option(cmd, "--listen-port")),
        port_of(set_options(cmd)["citygate_metrics_listen"]),
    )
    assert (int(image[0]), int(image[1])) == (proxy_port, metrics_port)
    assert exposed == {proxy_port, metrics_port}
    stack = compose()["services"]["citygate"]
    assert {int(entry.split(":")[-1]) for entry in stack["ports"]} == exposed
    assert {int(entry.split(":")[-2]) for entry in stack["ports"]} == exposed

    # The cluster: the Services' ports and the pods' container ports.
    proxy = kubernetes_object("Service", "citygate")["spec"]["ports"][0]
    metrics = kubernetes_object("Service", "citygate-metrics")["spec"]["ports"][0]
    assert first_number(cluster[0]) == proxy["port"]
    assert f"to the pods' {proxy_port}" in cluster[0]
    assert first_number(cluster[1]) == metrics["port"] == metrics_port


def test_pac_files_name_the_proxy_port_of_their_install() -> None:
    vm_port = first_number(next(v for k, v in ports_table().items() if "systemd" in k)[0])
    demo = yaml.safe_load((REPO / "config/citygate.yaml").read_text(encoding="utf-8"))
    assert all(port_of(proxy) == vm_port for proxy in demo["pac"]["proxies"])
    stack = yaml.safe_load((REPO / "deploy/compose/citygate.yaml").read_text(encoding="utf-8"))
    published = {entry.rsplit(":", 1)[0] for entry in compose()["services"]["citygate"]["ports"]}
    assert set(stack["pac"]["proxies"]) <= published


def test_every_file_the_new_sections_name_exists() -> None:
    text = "".join(readme_section(title) for title in SECTIONS)
    names = set(
        re.findall(
            r"(?<![\w/.-])((?:deploy|config|directory)/[\w./-]*[\w/]|docker-compose\.yml|Dockerfile)", text
        )
    )
    assert names, "the sections name the packaging files"
    for name in names:
        assert (REPO / name).exists(), name


def test_the_docker_section_matches_the_image() -> None:
    docker = readme_section("Docker")
    final = final_stage(dockerfile_instructions())
    volumes = set(exec_form(one(final, "VOLUME").text))
    for volume in re.findall(r"-v [\w-]+:(\S+)", docker):
        assert volume in volumes, volume
    assert "citygate_metrics_listen=0.0.0.0:9090" in docker
    assert "citygate_metrics_listen=0.0.0.0:9090" in exec_form(one(final, "CMD").text)


def test_the_rollout_uses_commands_that_exist() -> None:
    rollout = readme_section("Rolling out department by department")
    assert "mode: report" in rollout and "departments:" in rollout and "would_deny" in rollout
    commands = re.findall(r"citygate (logs|report) ([^`\n#]*)", rollout)
    assert {command for command, _ in commands} == {"logs", "report"}
    for command, arguments in commands:
        usage = subprocess.run(
            [*citygate_command(), command, "--help"], capture_output=True, text=True, check=True
        ).stdout
        for flag in re.findall(r"--[\w-]+", arguments):
            assert flag in usage, f"citygate {command} has no {flag}"
