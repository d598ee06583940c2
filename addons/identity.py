"""Who is asking: the identity a request presents to the proxy, verified by the directory."""

from __future__ import annotations

import logging

from mitmproxy import http

from citygate.addons.credentials import UnsupportedCredentials, basic_credentials
from citygate.directory.gateway import DirectoryGateway
from citygate.proxy.decision import Identity

log = logging.getLogger("citygate")


class IdentityResolver:
    def __init__(self, directory: DirectoryGateway) -> None:
        self.directory = directory

    async def resolve(self, flow: http.HTTPFlow) -> Identity | None:
        """The identity in the request's Proxy-Authorization header; None when there is none.

        Credentials that are present but unusable or wrong give an unauthenticated identity,
        so the decision says `credentials_invalid` rather than `credentials_required`.
        """
        try:
            credentials = basic_credentials(flow.request.headers)
        except UnsupportedCredentials as exc:
            client = flow.client_conn.peername[0] if flow.client_conn.peername else "-"
            log.info("citygate: unusable proxy credentials from %s: %s", client, exc)
            return Identity("", "basic", authenticated=False)
        if credentials is None:
            return None
        verified = await self.directory.authenticate(credentials.user, credentials.password)
        return Identity(credentials.user, "basic", authenticated=verified)
