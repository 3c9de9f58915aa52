"""A test OpenID Connect issuer: it serves discovery and a JWKS over HTTP and really signs
tokens (RS256) with its own key, so JWT authorizers are tested against the real protocol."""

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


class Issuer:
    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "test-key-1"
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.discovery_url = f"{self.url}/.well-known/openid-configuration"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handler(self):
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks.json",
                            "token_endpoint": f"{issuer.url}/token", "id_token_signing_alg_values_supported": ["RS256"]}
                elif self.path == "/jwks.json":
                    public = json.loads(RSAAlgorithm.to_jwk(issuer.key.public_key()))
                    body = {"keys": [dict(public, kid=issuer.kid, use="sig", alg="RS256")]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler

    def token(self, key=None, kid=None, lifetime=300, **claims):
        now = int(time.time())
        payload = {"iss": self.url, "sub": "user-1", "iat": now, "exp": now + lifetime, "jti": uuid.uuid4().hex}
        payload.update(claims)
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid})

    def stop(self):
        self.server.shutdown()
