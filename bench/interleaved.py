"""Two proxies on one scenario, alternating A B B A: what each costs, free of the machine's drift.

bench/throughput.py runs its proxies in the same order every round, and this machine's speed
drifts by up to 20% within minutes, so a ratio between two proxies of that harness carries
some of the drift. Here citygate (the default: fast path, uvloop) runs against one other proxy,
one scenario at a time, in the order A B B A repeated, and the medians of the CPU us per request
are compared.

Reproduce (nginx and wrk as for `make bench`):

    .venv/bin/python bench/interleaved.py --only d --against no-fast-path   # ~1.5 min
    .venv/bin/python bench/interleaved.py --only a,d --against mitmdump
    git worktree add /tmp/before 6fbeab6 && (cd /tmp/before && make .venv/.installed)
    .venv/bin/python bench/interleaved.py --only d --against-checkout /tmp/before   # an older citygate
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from servers import MitmProxy, Nginx, require
from throughput import SCENARIOS, measure

AGAINST = {
    "no-fast-path": lambda folder: MitmProxy(
        folder, "citygate", name="citygate-no-fast-path", extra=["--set", "citygate_fast_path=false"]
    ),
    "asyncio": lambda folder: MitmProxy(folder, "citygate", name="citygate asyncio", event_loop="asyncio"),
    "mitmdump": lambda folder: MitmProxy(folder, "mitmdump"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="d", help="scenarios, e.g. a,d (default: %(default)s)")
    parser.add_argument("--against", choices=sorted(AGAINST), default="no-fast-path")
    parser.add_argument(
        "--against-checkout",
        type=Path,
        help="instead: `citygate run` of another checkout of citygate (its .venv), e.g. an older commit",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of A B B A (default: %(default)s)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per run (default: %(default)s)")
    args = parser.parse_args()
    require("nginx", "wrk", "socat", "curl")
    print(f"Reproduce: .venv/bin/python bench/interleaved.py {' '.join(sys.argv[1:])}".rstrip())
    folder = Path(tempfile.mkdtemp(prefix="citygate-interleaved-"))
    try:
        with ExitStack() as stack:
            nginx = stack.enter_context(Nginx(folder))
            citygate = stack.enter_context(MitmProxy(folder, "citygate"))
            other = stack.enter_context(
                MitmProxy(
                    folder,
                    "citygate",
                    name="citygate before",
                    bin_folder=args.against_checkout / ".venv" / "bin",
                )
                if args.against_checkout
                else AGAINST[args.against](folder)
            )
            print(
                f"\n| scenario | {citygate.name} us/req | {other.name} us/req | {citygate.name} / {other.name} |"
            )
            print("|---|---:|---:|---:|")
            for scenario in (s for s in SCENARIOS if s.key in args.only.split(",")):
                costs: dict[str, list[float]] = {citygate.name: [], other.name: []}
                for proxy in [citygate, other, other, citygate] * args.rounds:
                    run = measure(scenario, proxy, nginx, args.duration, [citygate, other, nginx])
                    costs[proxy.name].append(run.cpu_us_per_request)
                mine, theirs = (statistics.median(costs[name]) for name in (citygate.name, other.name))
                print(
                    f"| ({scenario.key}) {scenario.title} | {mine:,.0f} | {theirs:,.0f} | {mine / theirs:.2f} |"
                )
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
