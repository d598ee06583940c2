"""`citygate portal`: serve the access-request portal (proxy/portal) with uvicorn."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from citygate.directory.problems import ConfigError
from citygate.proxy.cli.commands import Commands, command

EPILOG = """examples:
  citygate portal                                   # http://127.0.0.1:8088/, for this machine only
  citygate portal --listen-host 0.0.0.0 --listen-port 443 --tls-cert portal.pem --tls-key portal.key

Employees sign in with their directory password, which the portal takes only over TLS or from
this machine: serve it with --tls-cert and --tls-key for the city's network.
"""


def register_portal(commands: Commands) -> None:
    portal = command(
        commands,
        "portal",
        "serve the access-request portal (request form, approvals)",
        EPILOG,
        run_portal,
        config=True,
    )
    portal.add_argument(
        "--listen-host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    portal.add_argument(
        "--listen-port", type=int, default=8088, help="port to listen on (default: %(default)s)"
    )
    portal.add_argument("--tls-cert", type=Path, help="the portal's certificate (PEM, with its chain)")
    portal.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")


def run_portal(args: argparse.Namespace) -> int:
    import uvicorn

    from citygate.proxy.portal.app import create_app

    if (args.tls_cert is None) != (args.tls_key is None):
        print("citygate: give both --tls-cert and --tls-key, or neither", file=sys.stderr)
        return 2
    try:
        app = create_app(Path(args.config), instance=str(args.listen_port))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"citygate: {problem}", file=sys.stderr)
        return 2
    except ValueError as exc:  # requests are off
        print(f"citygate: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=args.listen_host,
        port=args.listen_port,
        ssl_certfile=str(args.tls_cert) if args.tls_cert else None,
        ssl_keyfile=str(args.tls_key) if args.tls_key else None,
        server_header=False,
        proxy_headers=False,  # the client's address is the connection's, never a header's
        log_level="info",
    )
    return 0
