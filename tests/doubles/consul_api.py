"""A double of the Consul agent's HTTP API, for tests only: a real HTTP/1.1 server on loopback.

It answers what py-consul sends for registration and discovery: ``PUT
/v1/agent/service/register`` (keys case-insensitive, as the agent decodes them), ``PUT
/v1/agent/service/deregister/<id>``, ``GET /v1/health/service/<name>`` (``passing``, ``tag``,
``dc``, and blocking queries: ``index`` + ``wait``, ``X-Consul-Index``), ``GET
/v1/agent/services``, ``/v1/agent/checks``, ``/v1/agent/self`` and ``/v1/status/leader``.

The test drives check status (``set_status``) or has the double run the real gRPC health
check against registered instances (``check_now``), as the agent would. It records every
request (headers included) and every change, enforces an ACL token when given one, fails
requests on demand (``fail_next``) and can go away and come back on the same port
(``stop`` / ``start``), dropping open connections like an agent that crashed.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# The agent's decoder matches keys case-insensitively and accepts snake_case aliases.
_KEYS = {
    k.lower(): k
    for k in [
        *("ID", "Name", "Tags", "Address", "Port", "Meta", "Check", "Checks", "Weights", "Kind"),
        *("EnableTagOverride", "CheckID", "Status", "Notes", "GRPC", "GRPCUseTLS", "HTTP", "TCP"),
        *("TTL", "Interval", "Timeout", "DeregisterCriticalServiceAfter", "TLSSkipVerify", "TLSServerName"),
    ]
}
_DURATION = re.compile(r"([\d.]+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text: str) -> float:
    return sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(text or ""))


def _canon(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = _KEYS.get(key.replace("_", "").lower(), key)
        if name == "Check" and isinstance(value, dict):
            out[name] = _canon(value)
        elif name == "Checks" and isinstance(value, list):
            out[name] = [_canon(v) for v in value]
        else:
            out[name] = value
    return out


@dataclass
class Seen:
    """One request as the double received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


class ConsulApiDouble:
    """One Consul agent (one node, one datacenter) speaking the real HTTP API on 127.0.0.1."""

    def __init__(
        self,
        *,
        token: str | None = None,
        datacenter: str = "dc1",
        node: str = "double-node",
        tls: tuple[bytes, bytes, bytes] | None = None,
    ) -> None:
        self.token = token
        # The agent's own TLS for gRPC checks with GRPCUseTLS: (CA, client cert, client key),
        # as a real agent's tls.grpc / tls.defaults configuration gives it.
        self.tls = tls
        self.datacenter = datacenter
        self.node = node
        self.services: dict[str, dict[str, Any]] = {}
        self.checks: dict[str, dict[str, Any]] = {}
        self.seen: list[Seen] = []
        self.events: list[tuple[float, str, str]] = []  # (monotonic, "register"/"deregister"/status, id)
        self.on_deregister: list[Any] = []  # called with the service id before the answer is sent
        self.port = 0
        self._cond = threading.Condition()
        self._index = 1
        self._service_index: dict[str, int] = {}
        self._critical_since: dict[str, float] = {}
        self._failures: list[tuple[int, str]] = []
        self._generation = 0
        self._server: ThreadingHTTPServer | None = None
        self._conns: set[socket.socket] = set()

    # --- lifecycle -------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ConsulApiDouble:
        """Listen (again, on the same port after ``stop``); state survives, as the agent's does."""
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        server.daemon_threads = True
        server.double = self  # type: ignore[attr-defined]
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        """Go away: stop listening, drop idle and held connections without an answer."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
            conns, self._conns = set(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --- what the test drives --------------------------------------------------------------
    def set_status(self, service_id: str, status: str, output: str = "") -> None:
        """Every check of ``service_id`` goes to ``status`` (passing / warning / critical)."""
        with self._cond:
            for check in self.checks.values():
                if check["ServiceID"] == service_id:
                    self._set_check(check, status, output)

    def fail_next(self, count: int = 1, status: int = 500, path_prefix: str = "/") -> None:
        with self._cond:
            self._failures += [(status, path_prefix)] * count

    def instances(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            return [s for s in self.services.values() if s["Service"] == name]

    def _check_channel(self, target: str, definition: dict[str, Any]) -> grpc.Channel:
        if not definition.get("GRPCUseTLS"):
            return grpc.insecure_channel(target)
        # A real TLS check: the server's certificate verified against the agent's CA and the
        # check's TLSServerName; the agent's certificate presented as the client's.
        ca, cert, key = self.tls or (None, None, None)
        creds = grpc.ssl_channel_credentials(ca, key, cert)
        name = definition.get("TLSServerName", "")
        return grpc.secure_channel(
            target, creds, options=[("grpc.ssl_target_name_override", name)] if name else []
        )

    def check_now(self, timeout: float = 1.0) -> None:
        """One round of the agent's checks: the real gRPC health check for every GRPC check, and
        deregistration of services critical for longer than their DeregisterCriticalServiceAfter."""
        with self._cond:
            todo = [(cid, c["Definition"]) for cid, c in self.checks.items() if c["Type"] == "grpc"]
        for cid, definition in todo:
            target, _, service = definition["GRPC"].partition("/")
            status, output = "critical", ""
            try:
                with self._check_channel(target, definition) as ch:
                    resp = health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest(service=service), timeout=timeout
                    )
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    status = "passing"
                output = f"gRPC health {target}/{service}: {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}"
            except grpc.RpcError as e:
                output = f"gRPC health {target}/{service}: {e.code().name}"  # type: ignore[attr-defined]
            with self._cond:
                if cid in self.checks:
                    self._set_check(self.checks[cid], status, output)
        with self._cond:
            now = time.monotonic()
            for cid, since in list(self._critical_since.items()):
                check = self.checks.get(cid)
                after = (
                    go_duration(check["Definition"].get("DeregisterCriticalServiceAfter", "")) if check else 0
                )
                if check and after and now - since >= after:
                    self._deregister(check["ServiceID"])

    # --- state changes (hold self._cond) -------------------------------------------------------
    def _bump(self, service_name: str) -> None:
        self._index += 1
        self._service_index[service_name] = self._index
        self._cond.notify_all()

    def _set_check(self, check: dict[str, Any], status: str, output: str) -> None:
        if check["Status"] == status:
            return
        check["Status"], check["Output"] = status, output
        if status == "critical":
            self._critical_since.setdefault(check["CheckID"], time.monotonic())
        else:
            self._critical_since.pop(check["CheckID"], None)
        self.events.append((time.monotonic(), status, check["ServiceID"]))
        self._bump(check["ServiceName"])

    def _register(self, body: dict[str, Any]) -> tuple[int, str]:
        d = _canon(body)
        if not d.get("Name"):
            return 400, "Missing service name"
        sid = d.get("ID") or d["Name"]
        defs = ([d["Check"]] if d.get("Check") else []) + list(d.get("Checks") or [])
        for c in defs:
            if (c.get("GRPC") or c.get("HTTP") or c.get("TCP")) and go_duration(c.get("Interval", "")) <= 0:
                return (
                    400,
                    "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks",
                )
        self._deregister(sid, quiet=True)
        self.services[sid] = {
            "ID": sid,
            "Service": d["Name"],
            "Tags": list(d.get("Tags") or []),
            "Address": d.get("Address") or "",
            "Port": int(d.get("Port") or 0),
            "Meta": dict(d.get("Meta") or {}),
            "Weights": d.get("Weights") or {"Passing": 1, "Warning": 1},
            "EnableTagOverride": bool(d.get("EnableTagOverride")),
            "Datacenter": self.datacenter,
        }
        for n, c in enumerate(defs, 1):
            cid = c.get("CheckID") or (f"service:{sid}" if len(defs) == 1 else f"service:{sid}:{n}")
            kind = next((k.lower() for k in ("GRPC", "HTTP", "TCP", "TTL") if c.get(k)), "")
            self.checks[cid] = {
                "Node": self.node,
                "CheckID": cid,
                "Name": c.get("Name") or f"Service '{d['Name']}' check",
                "Status": c.get("Status") or "critical",  # as the agent: critical until it passes
                "Notes": c.get("Notes") or "",
                "Output": "",
                "ServiceID": sid,
                "ServiceName": d["Name"],
                "ServiceTags": list(d.get("Tags") or []),
                "Type": kind,
                "Definition": c,
            }
            if self.checks[cid]["Status"] == "critical":
                self._critical_since[cid] = time.monotonic()
        self.events.append((time.monotonic(), "register", sid))
        self._bump(d["Name"])
        return 200, ""

    def _deregister(self, sid: str, quiet: bool = False) -> bool:
        service = self.services.pop(sid, None)
        if service is None:
            return False
        for cid in [cid for cid, c in self.checks.items() if c["ServiceID"] == sid]:
            del self.checks[cid]
            self._critical_since.pop(cid, None)
        if not quiet:
            self.events.append((time.monotonic(), "deregister", sid))
        self._bump(service["Service"])
        return True

    def _health(self, name: str, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        node = {
            "ID": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.node)),
            "Node": self.node,
            "Address": "127.0.0.1",
            "Datacenter": self.datacenter,
            "TaggedAddresses": {"lan": "127.0.0.1", "wan": "127.0.0.1"},
            "Meta": {"consul-network-segment": ""},
        }
        serf = {"Node": self.node, "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing"}
        out = []
        for sid, svc in self.services.items():
            if svc["Service"] != name or not set(query.get("tag", [])) <= set(svc["Tags"]):
                continue
            checks = [serf, *(c for c in self.checks.values() if c["ServiceID"] == sid)]
            if "passing" in query and any(c["Status"] != "passing" for c in checks):
                continue
            out.append({"Node": node, "Service": dict(svc), "Checks": [_public(c) for c in checks]})
        return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # As Go's net/http (the real agent): headers and body go out as two writes, and with Nagle on
    # the body would wait ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: ThreadingHTTPServer

    @property
    def double(self) -> ConsulApiDouble:
        return self.server.double  # type: ignore[attr-defined, no-any-return]

    def setup(self) -> None:
        super().setup()
        with self.double._cond:
            self.double._conns.add(self.connection)

    def finish(self) -> None:
        with self.double._cond:
            self.double._conns.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._serve("GET")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        d = self.double
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with d._cond:
            generation = d._generation
            d.seen.append(Seen(method, url.path, query, dict(self.headers.items()), body))
            failure = next((f for f in d._failures if url.path.startswith(f[1])), None)
            if failure is not None:
                d._failures.remove(failure)
        if failure is not None:
            return self._reply(failure[0], "injected failure")
        token = self.headers.get("X-Consul-Token") or query.get("token", [""])[0]
        if d.token is not None and token != d.token:
            return self._reply(403, "ACL not found")
        if "dc" in query and query["dc"][0] != d.datacenter:
            return self._reply(500, "No path to datacenter")
        if method == "PUT" and url.path.startswith("/v1/agent/service/deregister/"):
            for hook in d.on_deregister:
                hook(urllib.parse.unquote(url.path.rsplit("/", 1)[1]))
        with d._cond:
            answer = self._route(method, url.path, query, body, generation)
        if answer is None:
            self.close_connection = True  # the agent went away mid-query: no answer at all
            return None
        return self._reply(*answer)

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, generation: int
    ) -> tuple[int, str, dict[str, str]] | None:
        d = self.double
        name = urllib.parse.unquote(path.rsplit("/", 1)[1])
        if method == "PUT" and path == "/v1/agent/service/register":
            code, text = d._register(json.loads(body or b"{}"))
            return code, text, {}
        if method == "PUT" and path.startswith("/v1/agent/service/deregister/"):
            if not d._deregister(name):
                return 404, f'Unknown service ID "{name}". Ensure that the service ID is passed.', {}
            return 200, "", {}
        if method == "GET" and path.startswith("/v1/health/service/"):
            if "index" in query:
                seen_index = int(query["index"][0])
                wait = min(go_duration(query.get("wait", ["5m"])[0]) or 300.0, 600.0)
                deadline = time.monotonic() + wait
                while d._service_index.get(name, 1) <= seen_index and d._generation == generation:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    d._cond.wait(remaining)
            if d._generation != generation:
                return None
            return _json(d._health(name, query), d._service_index.get(name, 1))
        if method == "GET" and path == "/v1/agent/services":
            return _json({sid: dict(s) for sid, s in d.services.items()})
        if method == "GET" and path == "/v1/agent/checks":
            return _json({cid: _public(c) for cid, c in d.checks.items()})
        if method == "GET" and path == "/v1/agent/self":
            cfg = {"Datacenter": d.datacenter, "NodeName": d.node, "Version": "1.20.0-double"}
            return _json({"Config": cfg, "Member": {"Name": d.node, "Addr": "127.0.0.1"}})
        if method == "GET" and path == "/v1/status/leader":
            return _json("127.0.0.1:8300")
        return 404, "404 page not found", {}

    def _reply(self, code: int, text: str, headers: dict[str, str] | None = None) -> None:
        payload = text.encode()
        self.send_response(code)
        for key, value in (headers or {"Content-Type": "text/plain; charset=utf-8"}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _public(check: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in check.items() if k != "Definition"}


def _json(data: Any, index: int | None = None) -> tuple[int, str, dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    if index is not None:
        headers |= {"X-Consul-Index": str(index), "X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"}
    return 200, json.dumps(data), headers
