"""deploy/kubernetes: the manifests parse, agree with each other, the image and the README."""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from deployfiles import (
    KUBERNETES,
    REPO,
    dockerfile_instructions,
    exec_form,
    final_stage,
    kubernetes_object,
    kubernetes_objects,
    kustomization,
    manifest_files,
    manifests,
    one,
    option,
    parse_run,
    place,
    port_of,
    readme_section,
    set_options,
)

DEPLOYMENT = kubernetes_object("Deployment", "citygate")
POD = DEPLOYMENT["spec"]["template"]
(CONTAINER,) = POD["spec"]["containers"]
ARGS = CONTAINER["args"]
CLUSTER = readme_section("Installing on a cluster (Kubernetes)")


def container_port(name: str) -> int:
    (port,) = [p["containerPort"] for p in CONTAINER["ports"] if p["name"] == name]
    return port


def mounts() -> dict[str, dict]:
    """mountPath -> the volume mounted there."""
    volumes = {volume["name"]: volume for volume in POD["spec"]["volumes"]}
    return {mount["mountPath"]: volumes[mount["name"]] for mount in CONTAINER["volumeMounts"]}


def test_every_manifest_parses_as_kubernetes_objects() -> None:
    files = manifest_files()
    assert {f.name for f in files} >= {
        "kustomization.yaml",
        "namespace.yaml",
        "deployment.yaml",
        "service.yaml",
        "pdb.yaml",
    }
    for path in files:
        for document in manifests(path):
            assert document.get("apiVersion") and document.get("kind"), path
            if document["kind"] != "Kustomization":
                assert document["metadata"]["name"], path


def test_the_kustomization_references_files_that_exist() -> None:
    config = kustomization()
    for resource in config["resources"]:
        assert (KUBERNETES / resource).is_file(), resource
    for generator in config.get("configMapGenerator", []):
        for entry in generator["files"]:
            assert (KUBERNETES / entry.split("=")[-1]).is_file(), entry
            assert (KUBERNETES / entry).resolve().is_relative_to(KUBERNETES), (
                "kustomize loads files under its folder only"
            )
    assert "secrets.example.yaml" not in config["resources"], "the example Secrets must never be applied"
    names = {o["kind"] for o in kubernetes_objects()}
    assert names == {"Namespace", "Deployment", "Service", "PodDisruptionBudget"}
    assert all(o["metadata"].get("namespace") in (None, config["namespace"]) for o in kubernetes_objects())


def test_kustomize_renders_the_kustomization() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the other tests check the kustomization's files")
    result = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    rendered = list(yaml.safe_load_all(result.stdout))
    (config_map,) = [o for o in rendered if o["kind"] == "ConfigMap"]
    assert config_map["metadata"]["name"].startswith("citygate-config-")  # its content's hash: a rollout
    (deployment,) = [o for o in rendered if o["kind"] == "Deployment"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    (wanted,) = kustomization()["images"]
    assert image == f"{wanted['newName']}:{wanted['newTag']}"


def test_several_replicas_and_a_disruption_budget() -> None:
    replicas = DEPLOYMENT["spec"]["replicas"]
    assert replicas == 3
    assert DEPLOYMENT["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    budget = kubernetes_object("PodDisruptionBudget", "citygate")
    assert 1 <= budget["spec"]["minAvailable"] < replicas
    labels = POD["metadata"]["labels"]
    assert DEPLOYMENT["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_container_runs_the_image_with_the_cluster_paths() -> None:
    parse_run(ARGS)
    image_cmd = exec_form(one(final_stage(dockerfile_instructions()), "CMD").text)
    assert option(ARGS, "--confdir") == option(image_cmd, "--confdir")
    assert set_options(ARGS) == set_options(image_cmd)
    assert container_port("proxy") == int(option(ARGS, "--listen-port"))
    assert container_port("metrics") == port_of(set_options(ARGS)["citygate_metrics_listen"])
    assert set_options(ARGS)["citygate_metrics_listen"].startswith("0.0.0.0:"), (
        "the kubelet probes the pod's address"
    )
    # --workers matches the CPU limit.
    assert option(ARGS, "--workers") == str(CONTAINER["resources"]["limits"]["cpu"])


def test_probes_ask_healthz_and_readyz_on_the_metrics_port() -> None:
    liveness = CONTAINER["livenessProbe"]["httpGet"]
    readiness = CONTAINER["readinessProbe"]["httpGet"]
    startup = CONTAINER["startupProbe"]["httpGet"]
    assert (liveness["path"], liveness["port"]) == ("/healthz", "metrics")
    # The directory, shared by every replica, is left out of routing (README, Kubernetes).
    assert (readiness["path"], readiness["port"]) == ("/readyz?exclude=directory", "metrics")
    assert (startup["path"], startup["port"]) == ("/healthz", "metrics")
    assert container_port("metrics") == 9090


def test_the_services_reach_the_named_ports() -> None:
    labels = POD["metadata"]["labels"]
    proxy = kubernetes_object("Service", "citygate")
    metrics = kubernetes_object("Service", "citygate-metrics")
    for service in (proxy, metrics):
        assert service["spec"]["selector"].items() <= labels.items()
    (proxy_port,) = proxy["spec"]["ports"]
    assert (proxy_port["port"], proxy_port["targetPort"]) == (3128, "proxy")
    assert proxy["spec"]["externalTrafficPolicy"] == "Local"  # the browsers' own addresses in the log
    (metrics_port,) = metrics["spec"]["ports"]
    assert (metrics_port["port"], metrics_port["targetPort"]) == (9090, "metrics")
    assert metrics["spec"]["type"] == "ClusterIP"


def test_the_pod_is_locked_down() -> None:
    pod = POD["spec"]["securityContext"]
    container = CONTAINER["securityContext"]
    assert pod["runAsNonRoot"] is True and container["runAsNonRoot"] is True
    run = " ".join(i.text for i in final_stage(dockerfile_instructions()) if i.keyword == "RUN")
    assert f"--uid {pod['runAsUser']} " in run, "the image's citygate user"
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    assert "add" not in container["capabilities"]
    assert POD["spec"]["automountServiceAccountToken"] is False
    assert CONTAINER["resources"]["requests"] and CONTAINER["resources"]["limits"]


def test_everything_citygate_writes_is_an_emptydir() -> None:
    by_path = mounts()
    for path in ("/tmp", set_options(ARGS)["citygate_audit_directory"]):
        assert "emptyDir" in by_path[path], path
    writable = {m["mountPath"] for m in CONTAINER["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp", set_options(ARGS)["citygate_audit_directory"]}


def test_configuration_is_mounted_as_folders_so_updates_reach_the_pods() -> None:
    # A subPath mount never sees a ConfigMap's updates: grants would not reload.
    assert all("subPath" not in m and "subPathExpr" not in m for m in CONTAINER["volumeMounts"])


def test_every_replica_mounts_the_one_ca_secret() -> None:
    volume = mounts()[option(ARGS, "--confdir")]
    assert volume["secret"]["secretName"] == "citygate-ca"
    # mitmproxy reads the key (and writes DH parameters only when the file is missing, which a
    # read-only Secret would refuse): the README's command puts both in the Secret.
    command = re.search(r"create secret generic citygate-ca .*?(?=\n\S|\nkubectl)", CLUSTER, re.S)
    assert command, "the README creates the citygate-ca Secret"
    for name in ("mitmproxy-ca.pem", "mitmproxy-ca-cert.pem", "mitmproxy-dhparam.pem"):
        assert f"--from-file=ca/{name}" in command.group(0), name
    assert "Every replica must mount the same CA Secret" in CLUSTER


def test_every_volume_comes_from_the_kustomization_or_the_readme() -> None:
    generated = {g["name"] for g in kustomization()["configMapGenerator"]}
    example = {doc["metadata"]["name"]: doc for doc in manifests(KUBERNETES / "secrets.example.yaml")}
    for path, volume in mounts().items():
        if "configMap" in volume:
            name = volume["configMap"]["name"]
            assert name in generated or f"create configmap {name} " in CLUSTER, (path, name)
        elif "secret" in volume:
            name = volume["secret"]["secretName"]
            assert name in example, (path, name)
            assert f"create secret generic {name} " in CLUSTER, (path, name)
        else:
            assert "emptyDir" in volume, path


def throwaway_ca_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test directory CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_the_cluster_configuration_loads_in_the_pod_layout(tmp_path: Path) -> None:
    """The files the README puts in each ConfigMap and Secret, at the Deployment's mount paths."""
    from citygate.proxy.policy import load_policy

    by_name = {m["name"]: m["mountPath"] for m in CONTAINER["volumeMounts"]}
    (generator,) = kustomization()["configMapGenerator"]
    for entry in generator["files"]:
        place(KUBERNETES / entry, tmp_path, f"{by_name['config']}/{Path(entry).name}")
    place(REPO / "config/sites.yaml", tmp_path, f"{by_name['catalog']}/sites.yaml")
    place(REPO / "config/grants", tmp_path, by_name["grants"])
    directory = tmp_path / by_name["directory"].lstrip("/")
    directory.mkdir(parents=True)
    (directory / "password").write_text("a service password\n", encoding="utf-8")
    (directory / "password").chmod(0o440)
    (directory / "ca.pem").write_bytes(throwaway_ca_pem())
    config = tmp_path / option(ARGS, "--config").lstrip("/")
    policy = load_policy(config)
    assert policy.grants, "the grants folder was found"
    assert policy.directory is not None
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    assert document["metrics"]["listen"] == set_options(ARGS)["citygate_metrics_listen"]
    assert document["audit"]["stdout"] is True  # the emptyDir log goes with its pod
    assert document["pac"]["proxies"] == [
        f"citygate.city.example:{kubernetes_object('Service', 'citygate')['spec']['ports'][0]['port']}"
    ]


def test_the_readme_command_makes_the_ca_files_the_secret_needs(tmp_path: Path) -> None:
    (line,) = [line for line in CLUSTER.splitlines() if "CertStore.from_store" in line]
    python, _, code = line.partition(" -c ")
    assert python.endswith("/python")
    subprocess.run([sys.executable, "-c", code.strip().strip('"')], cwd=tmp_path, check=True, timeout=120)
    for name in re.findall(r"--from-file=ca/([\w.-]+)", CLUSTER):
        assert (tmp_path / "ca" / name).is_file(), name
