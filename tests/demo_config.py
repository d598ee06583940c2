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
