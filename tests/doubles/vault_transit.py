"""A double of HashiCorp Vault's transit secrets engine, for tests only: real HTTP on loopback.

It answers what ``common.crypto.vault`` sends: ``GET /v1/<mount>/keys/<name>`` (``latest_version``),
``POST /v1/<mount>/{encrypt,decrypt,rewrap}/<name>`` with base64 ``plaintext`` /
``associated_data`` and ``vault:v<N>:<base64>`` ciphertexts, and ``POST
/v1/<mount>/keys/<name>/rotate``. Keys are real AES-256-GCM keys per version, so a wrong
associated data or a tampered ciphertext fails as it would in Vault (HTTP 400). It checks
``X-Vault-Token``, records requests (path, token seen) and fails the next requests on demand.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


@dataclass
class VaultTransitDouble:
    """The double's state: transit keys (name -> versions), the token it accepts, faults."""

    token: str = "s.test-token"
    mount: str = "transit"
    keys: dict[str, list[bytes]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    fail_next: list[int] = field(default_factory=list)  # HTTP statuses for the next requests
    _server: ThreadingHTTPServer | None = None

    def create_key(self, name: str) -> None:
        """A new transit key with one version."""
        self.keys[name] = [AESGCM.generate_key(bit_length=256)]

    def rotate(self, name: str) -> int:
        """Add a version (as ``POST keys/<name>/rotate``); returns the latest version."""
        self.keys[name].append(AESGCM.generate_key(bit_length=256))
        return len(self.keys[name])

    def start(self) -> str:
        """Serve on a free loopback port; returns the address for VOICEAI_VAULT_ADDR."""
        double = self

        class Handler(_Handler):
            state = double

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- the transit operations, in Vault's terms ---------------------------------------
    def encrypt(self, name: str, plaintext: bytes, aad: bytes, version: int = 0) -> str:
        """``vault:v<N>:<base64(nonce|ciphertext)>`` under version N (latest by default)."""
        versions = self.keys[name]
        version = version or len(versions)
        nonce = os.urandom(12)
        body = nonce + AESGCM(versions[version - 1]).encrypt(nonce, plaintext, aad)
        return f"vault:v{version}:{base64.b64encode(body).decode()}"

    def decrypt(self, name: str, ciphertext: str, aad: bytes) -> bytes:
        """The plaintext; ValueError when the ciphertext does not open."""
        prefix, ver, body = ciphertext.split(":", 2)
        if prefix != "vault" or not ver.startswith("v"):
            raise ValueError("invalid ciphertext: no prefix")
        raw = base64.b64decode(body)
        try:
            return AESGCM(self.keys[name][int(ver[1:]) - 1]).decrypt(raw[:12], raw[12:], aad)
        except (InvalidTag, IndexError) as e:
            raise ValueError("cipher: message authentication failed") from e


class _Handler(BaseHTTPRequestHandler):
    state: VaultTransitDouble

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _gate(self) -> list[str] | None:
        s = self.state
        s.requests.append((self.command, self.path))
        if s.fail_next:
            self._send(s.fail_next.pop(0), {"errors": ["injected failure"]})
            return None
        if self.headers.get("X-Vault-Token") != s.token:
            self._send(403, {"errors": ["permission denied"]})
            return None
        parts = self.path.strip("/").split("/")
        if len(parts) < 4 or parts[0] != "v1" or parts[1] != s.mount:
            self._send(404, {"errors": []})
            return None
        return parts[2:]

    def do_GET(self) -> None:
        parts = self._gate()
        if parts is None:
            return
        if parts[0] == "keys" and parts[1] in self.state.keys:
            versions = self.state.keys[parts[1]]
            self._send(
                200, {"data": {"name": parts[1], "type": "aes256-gcm96", "latest_version": len(versions)}}
            )
        else:
            self._send(404, {"errors": []})

    def do_POST(self) -> None:
        parts = self._gate()
        if parts is None:
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        s = self.state
        op, name = parts[0], parts[1]
        if op == "keys" and len(parts) == 3 and parts[2] == "rotate" and name in s.keys:
            s.rotate(name)
            self._send(200, {"data": {"latest_version": len(s.keys[name])}})
            return
        if name not in s.keys:
            self._send(400, {"errors": ["encryption key not found"]})
            return
        aad = base64.b64decode(body.get("associated_data", ""))
        try:
            if op == "encrypt":
                data = {"ciphertext": s.encrypt(name, base64.b64decode(body["plaintext"]), aad)}
            elif op == "decrypt":
                data = {"plaintext": base64.b64encode(s.decrypt(name, body["ciphertext"], aad)).decode()}
            elif op == "rewrap":
                data = {"ciphertext": s.encrypt(name, s.decrypt(name, body["ciphertext"], aad), aad)}
            else:
                self._send(404, {"errors": []})
                return
        except (ValueError, KeyError) as e:
            self._send(400, {"errors": [str(e)]})
            return
        self._send(200, {"data": data})
