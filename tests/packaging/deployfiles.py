"""Reading the packaging files the way their tools would, for tests/packaging.

No container engine runs here, so the Dockerfile, docker-compose.yml, the Kubernetes manifests
and the systemd unit are checked statically: parsed, cross-checked against each other and the
README, and, where a piece can run without a container, run (the image's command, the compose
stack's citygate configuration and its OpenLDAP entrypoint).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
KUBERNETES = REPO / "deploy" / "kubernetes"
UNIT = REPO / "deploy" / "systemd" / "citygate.service"
README = REPO / "README.md"


# --- Dockerfile --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    stage: int  # 0 for the first FROM's stage
    keyword: str  # upper case
    text: str  # the arguments, continuation lines joined


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """The instructions of a Dockerfile, with comments dropped and continuations joined."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(stage, keyword, " ".join(rest.split())))
    assert not pending, f"{path}: the last instruction ends with a line continuation"
    return instructions


def exec_form(text: str) -> list[str]:
    """The JSON (exec) form of CMD, ENTRYPOINT, VOLUME or HEALTHCHECK CMD."""
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value), text
    return value


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(instruction.stage for instruction in instructions)
    return [instruction for instruction in instructions if instruction.stage == last]


def one(instructions: Iterable[Instruction], keyword: str) -> Instruction:
    found = [instruction for instruction in instructions if instruction.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def healthcheck_command(instructions: list[Instruction]) -> list[str]:
    text = one(final_stage(instructions), "HEALTHCHECK").text
    _options, _, command = text.partition("CMD ")
    return exec_form(command)


def image_layout(root: Path, instructions: list[Instruction] | None = None) -> Path:
    """Copy what the final stage COPYs from the build context into root, at its image paths."""
    instructions = instructions if instructions is not None else dockerfile_instructions()
    for instruction in final_stage(instructions):
        if instruction.keyword != "COPY" or instruction.text.startswith("--from"):
            continue
        source, target = instruction.text.split()
        place(REPO / source, root, target)
    return root


def place(source: Path, root: Path, target: str) -> Path:
    """Copy a file or folder of the checkout to the absolute path `target` under root."""
    assert source.exists(), f"{source} does not exist"
    destination = root / PurePosixPath(target).relative_to("/")
    if source.is_dir():
        shutil.copytree(source, destination, dirs_exist_ok=True)
    else:
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    return destination


# --- compose and Kubernetes --------------------------------------------------------------------


def compose() -> dict:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), COMPOSE
    return document


def bind_mounts(service: dict) -> list[tuple[Path, str]]:
    """(checkout path, container path) of a compose service's bind mounts (short syntax)."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target, *_mode = volume.split(":")
        if source.startswith((".", "/")):
            mounts.append(((REPO / source).resolve(), target))
    return mounts


def named_volumes(service: dict) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target, *_mode = volume.split(":")
        if not source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def container_layout(root: Path, service: dict, *, image: bool = False) -> Path:
    """The files a compose service sees: (the image's COPYs, then) its bind mounts, under root."""
    if image:
        image_layout(root)
    for source, target in bind_mounts(service):
        place(source, root, target)
    return root


def manifest_files() -> list[Path]:
    return sorted(KUBERNETES.glob("*.yaml"))


def manifests(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def kustomization() -> dict:
    return manifests(KUBERNETES / "kustomization.yaml")[0]


def kubernetes_objects() -> list[dict]:
    """Every object the kustomization's resources hold."""
    objects = []
    for resource in kustomization()["resources"]:
        objects += manifests(KUBERNETES / resource)
    return objects


def kubernetes_object(kind: str, name: str) -> dict:
    found = [o for o in kubernetes_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


# --- citygate run's arguments ------------------------------------------------------------------


def option(argv: list[str], flag: str) -> str | None:
    """The value after `flag` in argv (the last one if repeated)."""
    values = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]
    return values[-1] if values else None


def set_options(argv: list[str]) -> dict[str, str]:
    """The `--set NAME=VALUE` options in argv."""
    pairs = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--set"]
    return dict(pair.split("=", 1) for pair in pairs)


def parse_run(argv: list[str]) -> object:
    """argv as `citygate run` parses it (argparse's own checks), without running a proxy."""
    from citygate.proxy import cli

    captured: list[object] = []

    def capture(args: object) -> int:
        captured.append(args)
        return 0

    original = cli.run_command
    cli.run_command = capture
    try:
        cli.main(argv)
    except SystemExit as exc:
        raise AssertionError(f"citygate rejects {shlex.join(argv)} (exit {exc.code})") from None
    finally:
        cli.run_command = original
    assert captured, f"{shlex.join(argv)} is not a `citygate run` command"
    return captured[0]


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def replace_values(argv: list[str], replacements: dict[str, str]) -> list[str]:
    """argv with the value after each flag, or each `--set NAME=`, replaced."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg in replacements:
            out[i + 1] = replacements[arg]
        elif arg == "--set":
            name = out[i + 1].split("=", 1)[0]
            if name in replacements:
                out[i + 1] = f"{name}={replacements[name]}"
    return out


# --- the systemd unit --------------------------------------------------------------------------


def unit_entries(path: Path = UNIT) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> every value (keys such as ExecReload may repeat), continuations joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"{path}: not a key=value line: {line!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(" ".join(value.split()))
    return sections


def unit_values(key: str, section: str = "Service") -> list[str]:
    return unit_entries()[section].get(key, [])


# --- README ------------------------------------------------------------------------------------


def readme_section(title: str) -> str:
    """The text of a README section (`### title`), up to the next heading of its level or above
    (lines in fenced code blocks are never headings)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    heading = f"### {title}"
    assert heading in lines, f'README has no "{heading}" section'
    body: list[str] = []
    fenced = False
    for line in lines[lines.index(heading) + 1 :]:
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,3} ", line):
            break
        body.append(line)
    return "\n".join(body) + "\n"


def readme_table(section: str, first_header: str) -> list[list[str]]:
    """The rows of the Markdown table in `section` whose first header cell is `first_header`."""
    lines = section.splitlines()
    for i, line in enumerate(lines):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_header:
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in row.strip().strip("|").split("|")])
            return rows
    raise AssertionError(f"no table headed {first_header!r} in the README section")


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of a GET without any proxy; (0, b"") if nothing answers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def citygate_command() -> list[str]:
    """The installed `citygate` script of the interpreter running the tests."""
    script = Path(sys.executable).parent / "citygate"
    assert script.exists(), f"{script} does not exist: install citygate in this environment (make test does)"
    return [str(script)]
