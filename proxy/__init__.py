"""The policy core: site catalog, grants, the decision function, config loading and the CLI.

Nothing in this package does network I/O or knows about mitmproxy; `citygate.addons`
adapts it to the proxy, `citygate.directory` supplies facts about people.
"""
