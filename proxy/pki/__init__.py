"""The proxy's certificate authority, read and checked with `cryptography` alone (no mitmproxy).

The city can give citygate a subordinate CA from its own PKI instead of the CA mitmproxy makes
for itself: `citygate ca request` makes its key and signing request (request.py), `citygate ca
install` checks the signed certificate and its chain (chain.py) and writes the files mitmproxy
loads from its confdir (confdir.py), and `citygate check` warns before the CA expires
(expiry.py). certfiles.py reads the files a CA comes in; findings.py is what a check reports.
"""
