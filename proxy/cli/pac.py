"""`citygate pac`: write the proxy auto-config file (its text: `citygate.proxy.pac`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from citygate.directory.problems import ConfigError
from citygate.proxy.cli.commands import Commands, command
from citygate.proxy.pac import PacSettings, render_pac

EPILOG = """examples:
  citygate pac > /var/www/wpad/proxy.pac
  citygate pac --config /etc/citygate/citygate.yaml --output /var/www/wpad/wpad.dat

The proxies and exceptions come from the config's `pac:` section, e.g.
  pac:
    proxies: ["citygate.city.example:3128"]
    direct_domains: [".city.example", "intranet.example.gov"]
    direct_networks: ["10.0.0.0/8", "192.168.0.0/16"]
"""


def register(commands: Commands) -> None:
    parser = command(
        commands,
        "pac",
        "write the proxy auto-config (PAC) file for the city's browsers",
        EPILOG,
        _pac_command,
        config=True,
    )
    parser.add_argument("--output", help="write to this file instead of standard output")


def _pac_command(args: argparse.Namespace) -> int:
    from citygate.proxy.policy import load_policy

    try:
        policy = load_policy(Path(args.config))
    except ConfigError as exc:
        print(f"citygate: the configuration is invalid:\n{exc}", file=sys.stderr)
        return 1
    settings = policy.features.pac
    assert isinstance(settings, PacSettings)
    if not settings.proxies:
        print(
            f'citygate: {args.config} has no "pac: proxies:"; add the address browsers use to reach '
            'citygate, e.g. pac: {proxies: ["citygate.city.example:3128"]}',
            file=sys.stderr,
        )
        return 1
    text = render_pac(settings)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
