"""The demo city's configuration (config/), copied for one test with some of its sections replaced."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def demo_config(folder: Path, **sections: Any) -> Path:
    """config/ copied into `folder`, reading the checkout's demo directory, with each of `sections`
    (a top-level key such as `identity` or `metrics`) set as given; the copy's citygate.yaml."""
    shutil.copytree(REPO / "config", folder / "config")
    config = folder / "config" / "citygate.yaml"
    document = yaml.safe_load(config.read_text())
    document["directory"]["ldif"] = str(REPO / "directory" / "demo.ldif")
    document.update(sections)
    config.write_text(yaml.safe_dump(document))
    return config


def requests_city(folder: Path, **requests: Any) -> Path:
    """The demo city with access requests on, its request store and audit log in `folder`
    (never the checkout's var/), and `requests` settings added (e.g. recorded_approvals)."""
    return demo_config(
        folder,
        audit={"directory": str(folder / "log")},
        requests={"enabled": True, "database": str(folder / "requests.sqlite"), **requests},
    )


def with_sections(config: Path, **sections: Any) -> None:
    """Set top-level sections of a copied config (demo_config's) as given."""
    document = yaml.safe_load(config.read_text())
    document.update(sections)
    config.write_text(yaml.safe_dump(document))
