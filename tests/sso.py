"""Single sign-on test helpers: signing keys made in the test, tokens, forgeries, a JWKS server.

Nothing here stands in for the code under test: the keys are real (cryptography), tokens are
signed with pyjwt (or by hand for forgeries pyjwt refuses to make), and `JwksServer` is a real
HTTP server on 127.0.0.1 that citygate fetches keys from.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ISSUER = "https://sso.example.gov/realms/city"
AUDIENCE = "citygate"
DOMAIN = "city.example"


class Signer:
    """An identity provider's signing key pair, with its key id."""

    def __init__(self, kind: str = "rsa", kid: str | None = None) -> None:
        self.kind = kind
        self.kid = kid if kid is not None else f"{kind}-key"
        if kind == "rsa":
            self.private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.alg, self._jwk = "RS256", jwt.algorithms.RSAAlgorithm
        elif kind == "ec":
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.alg, self._jwk = "ES256", jwt.algorithms.ECAlgorithm
        elif kind == "ed25519":
            self.private = ed25519.Ed25519PrivateKey.generate()
            self.alg, self._jwk = "EdDSA", jwt.algorithms.OKPAlgorithm
        else:
            raise ValueError(kind)
        self.public = self.private.public_key()

    def jwk(self) -> dict[str, Any]:
        entry = self._jwk.to_jwk(self.public, as_dict=True)
        entry.update(kid=self.kid, use="sig")
        return entry

    def public_pem(self) -> bytes:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(self, claims: dict[str, Any], *, kid: str | None = "same", **header: Any) -> str:
        headers = dict(header)
        if kid is not None:
            headers["kid"] = self.kid if kid == "same" else kid
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=headers)


def claims(now: float | None = None, **overrides: Any) -> dict[str, Any]:
    """Claims of a good token for jlee, valid for ten minutes from `now`; None removes a claim."""
    now = time.time() if now is None else now
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "f3a1c2d4-jlee",
        "preferred_username": f"jlee@{DOMAIN}",
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + 600,
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def b64(data: bytes | str | dict[str, Any]) -> str:
    if isinstance(data, dict):
        data = json.dumps(data)
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(payload: dict[str, Any], alg: str = "none") -> str:
    """The `alg: none` forgery: no signature at all."""
    return f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(payload)}."


def hmac_token(payload: dict[str, Any], secret: bytes, kid: str | None = None, alg: str = "HS256") -> str:
    """A token MACed with `secret`; with a public key's PEM as the secret, the algorithm-confusion forgery.

    Made by hand because pyjwt (rightly) refuses to use a PEM key as an HMAC secret.
    """
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signing_input = f"{b64(header)}.{b64(payload)}"
    signature = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"


class _JwksHandler(BaseHTTPRequestHandler):
    server: JwksServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        server = self.server
        with server.lock:
            server.fetches += 1
            delay, status, body, location = server.delay, server.status, server.body, server.location
        if delay:
            time.sleep(delay)
        self.send_response(status)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class JwksServer(ThreadingHTTPServer):
    """A JWKS endpoint on 127.0.0.1 that counts how often it is fetched."""

    daemon_threads = True

    def __init__(self, *signers: Signer) -> None:
        super().__init__(("127.0.0.1", 0), _JwksHandler)
        self.lock = threading.Lock()
        self.fetches = 0
        self.delay = 0.0
        self.status = 200
        self.location: str | None = None
        self.body = b""
        self.publish(*signers)
        # A short poll interval: shutdown() waits for it, and tests stop many servers.
        self._thread = threading.Thread(
            target=self.serve_forever, args=(0.05,), name="jwks-server", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/realms/city/protocol/openid-connect/certs"

    def publish(self, *signers: Signer, extra: list[dict[str, Any]] | None = None) -> None:
        """Serve exactly these keys from now on (a rotation retires every key not named)."""
        document = {"keys": [signer.jwk() for signer in signers] + list(extra or [])}
        self.serve_raw(json.dumps(document).encode())

    def serve_raw(self, body: bytes, status: int = 200, location: str | None = None) -> None:
        with self.lock:
            self.body, self.status, self.location = body, status, location

    def count(self) -> int:
        with self.lock:
            return self.fetches

    def start(self) -> JwksServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@contextmanager
def jwks_server(*signers: Signer) -> Iterator[JwksServer]:
    server = JwksServer(*signers).start()
    try:
        yield server
    finally:
        server.stop()
