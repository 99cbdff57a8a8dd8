"""An HTTP proxy on 127.0.0.1 in front of the S3 test server that fails the way real object
stores do: listings that lag or answer nothing, replies lost after the write happened,
DeleteObjects answered 200 with a per-key AccessDenied, 503 storms.

    with S3FaultProxy(s3_server.url) as proxy:
        proxy.add(Fault(RequestKind.PUT, r"manifest\\.json$", Action.LOSE_REPLY, times=3))
        settings.s3_endpoint_url = proxy.url

Faults match the request kind and a regex searched in the object key (or the LIST prefix);
each lets `skip` matching requests through, then fires `times` times (None: until
removed). `proxy.seen` counts requests by kind.
"""

from __future__ import annotations

import http.client
import re
import threading
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


class RequestKind(StrEnum):
    LIST = "list"
    PUT = "put"
    GET = "get"
    HEAD = "head"
    DELETE_OBJECTS = "delete_objects"
    OTHER = "other"


class Action(StrEnum):
    EMPTY_LIST = "empty_list"  # forward, then drop every matching key from the listing
    LOSE_REPLY = "lose_reply"  # forward (the write happens), then answer 500
    DROP_CONNECTION = "drop_connection"  # forward, then close the socket without an answer
    DENY_DELETE = "deny_delete"  # answer 200 naming each key AccessDenied; delete nothing
    UNAVAILABLE = "unavailable"  # 503 SlowDown without forwarding


@dataclass
class Fault:
    kind: RequestKind
    pattern: str
    action: Action
    times: int | None = None
    skip: int = 0  # let this many matching requests through first
    fired: int = 0
    matched: int = 0
    regex: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.regex = re.compile(self.pattern)


@dataclass
class _Request:
    kind: RequestKind
    key: str  # object key, or the prefix of a LIST
    body: bytes


class S3FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults: list[Fault] = []
        self.seen: Counter[RequestKind] = Counter()
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        with self.lock:
            self.faults.remove(fault)

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()

    def match(self, request: _Request) -> Fault | None:
        with self.lock:
            self.seen[request.kind] += 1
            for fault in self.faults:
                if fault.kind != request.kind or not fault.regex.search(request.key):
                    continue
                fault.matched += 1
                if fault.matched <= fault.skip:
                    continue
                if fault.times is not None and fault.fired >= fault.times:
                    continue
                fault.fired += 1
                return fault
        return None

    def __enter__(self) -> S3FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _classify(method: str, path: str, query: dict[str, list[str]]) -> tuple[RequestKind, str]:
    bucket_and_key = unquote(path.lstrip("/"))
    _, _, key = bucket_and_key.partition("/")
    if method == "POST" and "delete" in query:
        return RequestKind.DELETE_OBJECTS, key
    if method == "GET" and not key:
        return RequestKind.LIST, query.get("prefix", [""])[0]
    kinds = {"PUT": RequestKind.PUT, "GET": RequestKind.GET, "HEAD": RequestKind.HEAD}
    return kinds.get(method, RequestKind.OTHER), key


def _strip_listing(body: bytes, fault: Fault) -> bytes:
    ET.register_namespace("", S3_NS)
    root = ET.fromstring(body)
    removed = 0
    for item in list(root.findall(f"{{{S3_NS}}}Contents")):
        key = item.findtext(f"{{{S3_NS}}}Key") or ""
        if fault.regex.search(key):
            root.remove(item)
            removed += 1
    count = root.find(f"{{{S3_NS}}}KeyCount")
    if count is not None and count.text:
        count.text = str(int(count.text) - removed)
    return ET.tostring(root, xml_declaration=True, encoding="UTF-8")


def _deny_each(body: bytes) -> bytes:
    keys = re.findall(rb"<Key>(.*?)</Key>", body)
    errors = b"".join(b"<Error><Key>" + key + b"</Key><Code>AccessDenied</Code>"
                      b"<Message>Access Denied</Message></Error>" for key in keys)
    return (b'<?xml version="1.0" encoding="UTF-8"?><DeleteResult xmlns="' + S3_NS.encode()
            + b'">' + errors + b"</DeleteResult>")


def _handler(proxy: S3FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            kind, key = _classify(self.command, parts.path,
                                  parse_qs(parts.query, keep_blank_values=True))
            if kind == RequestKind.DELETE_OBJECTS:  # match the keys it names
                key = "\n".join(k.decode() for k in re.findall(rb"<Key>(.*?)</Key>", body))
            fault = proxy.match(_Request(kind, key, body))
            if fault is not None and fault.action == Action.UNAVAILABLE:
                self._answer(503, b"<Error><Code>SlowDown</Code><Message>Please reduce your "
                                  b"request rate.</Message></Error>")
                return
            if fault is not None and fault.action == Action.DENY_DELETE:
                self._answer(200, _deny_each(body))
                return
            status, headers, reply = self._forward(body)
            if fault is not None and fault.action == Action.LOSE_REPLY:
                self._answer(500, b"<Error><Code>InternalError</Code><Message>We encountered "
                                  b"an internal error.</Message></Error>")
                return
            if fault is not None and fault.action == Action.DROP_CONNECTION:
                self.close_connection = True
                self.wfile.flush()
                self.connection.close()
                return
            if fault is not None and fault.action == Action.EMPTY_LIST and status == 200:
                reply = _strip_listing(reply, fault)
            self.send_response(status)
            dropped = ("transfer-encoding", "connection") if self.command == "HEAD" else (
                "content-length", "transfer-encoding", "connection")
            for name, value in headers:
                if name.lower() not in dropped:
                    self.send_header(name, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply)

        def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
            conn = http.client.HTTPConnection(*proxy.upstream, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                answer = conn.getresponse()
                return answer.status, answer.getheaders(), answer.read()
            finally:
                conn.close()

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _serve

    return Handler
