"""Directory backends: where citygate learns who people are, their department and role.

The lowest layer: it imports nothing from `citygate.proxy` or `citygate.addons`. Besides the
backends (LDAP over the network, a static LDIF file) it holds their settings and `problems`, the
configuration-problem vocabulary every loader shares.
"""
