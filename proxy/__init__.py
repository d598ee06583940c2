"""The policy core at the top: the site catalog, grants, the decision function, config loading.

The top-level modules do no network I/O and do not know mitmproxy (config loading reads files).
Feature families live in subpackages (`audit`, `metrics`, `reports`, `identity`); the process
edge (the `citygate` command, workers, HTTP listeners) in `cli` and `runtime`. `citygate.addons`
adapts the core to the proxy; `citygate.directory` supplies facts about people.
"""
