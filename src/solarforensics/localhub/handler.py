"""The local Hub's HTTP side: each listening origin (hub or CDN) and the handler that routes its requests to the Hub API,
a file answer or a control endpoint."""

from __future__ import annotations

import json
import socket
import socketserver
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

from solarforensics.errors import ForensicsError
from solarforensics.localhub.api import (
    COMMITS_PAGE,
    HttpError,
    byte_range,
    commit_page,
    entry_not_found,
    model_info,
    open_commit,
    paths_info_entries,
    tree_entries,
)
from solarforensics.localhub.faults import STATUS_FAULTS, changed_file, shifted
from solarforensics.localhub.store import SHA_PATTERN, Commit, Repo, RepoFile
from solarforensics.localhub.traffic import chunk_size

MAX_REQUEST_BODY = 1 << 20


class HubRequestHandler(BaseHTTPRequestHandler):
    """Answers one connection to an origin ("hub" or "cdn"), logging each answer in its HubServer's traffic."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections end after this
    server: Origin

    def log_message(self, format, *args) -> None:
        pass

    def _dispatch(self) -> None:
        method = self.command
        hub = self.server.hub
        url = urlsplit(self.path)
        segments = [unquote(s) for s in url.path.split("/")[1:]]
        body = self._request_body()
        self._kind, self._fault, self._sent, self._entry = "other", None, 0, None
        is_control = self._is_control = segments[0] in ("_stats", "_faults")
        try:
            if body is None:
                raise HttpError(413, None, "request body too large")
            if is_control:
                return self._control(method, segments, body)
            if hub.latency_ms:
                time.sleep(hub.latency_ms / 1000)
            if self.server.name == "cdn":
                self._route_cdn(method, segments)
            else:
                self._route_hub(method, segments, parse_qs(url.query), body)
        except HttpError as err:
            self._send_error(err, method)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug or a broken store must answer 500, not hang the client
            self._send_error(HttpError(500, None, f"{type(exc).__name__}: {exc}"), method)
        finally:
            if not is_control and self._entry is None:  # no answer went out (the client hung up first)
                self._log_answer(None, 0)

    def _log_answer(self, status: int | None, planned_bytes: int) -> None:
        # Logged before the answer goes out, so a client that has its answer always finds it in the stats.
        self._entry = {"origin": self.server.name, "method": self.command, "path": self.path,
                       "range": self.headers.get("Range"), "auth": "Authorization" in self.headers,
                       "user_agent": self.headers.get("User-Agent"),
                       "status": status, "bytes": planned_bytes, "kind": self._kind, "fault": self._fault}
        self.server.hub.traffic.record(self._entry)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def _request_body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BODY:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def _token(self) -> str | None:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()

    # ---- routing -------------------------------------------------------------------------------------------------

    def _route_hub(self, method: str, segments: list[str], query: dict, body: bytes) -> None:
        head, read = method == "HEAD", method in ("GET", "HEAD")
        if segments[:2] == ["api", "models"] and len(segments) >= 4:
            repo_id, rest = f"{segments[2]}/{segments[3]}", segments[4:]
            if read and (not rest or (rest[0] == "revision" and len(rest) >= 2)):
                self._kind = "model_info"
                return self._send_json(model_info(*self._open(repo_id, "/".join(rest[1:]) or "main")), head)
            if read and len(rest) >= 2 and rest[0] == "tree":
                self._kind = "tree"
                recursive = query.get("recursive", ["false"])[0].lower() == "true"
                commit = self._open(repo_id, rest[1])[1]
                return self._send_json(tree_entries(commit, "/".join(rest[2:]), recursive), head)
            if read and len(rest) == 2 and rest[0] == "commits":
                self._kind = "commits"
                repo, commit = self._open(repo_id, rest[1])
                page, limit = _int(query, "p", 0), _int(query, "limit", COMMITS_PAGE)
                entries, more = commit_page(repo, commit, page, limit)
                link = {}
                if more:  # absolute, as huggingface_hub's paginate() requests the next URL as given
                    host = self.headers.get("Host") or f"{self.server.server_name}:{self.server.server_port}"
                    path = "/".join(quote(s, safe="") for s in segments)
                    link = {"Link": f'<http://{host}/{path}?p={page + 1}&limit={limit}>; rel="next"'}
                return self._send_json(entries, head, link)
            if method == "POST" and len(rest) >= 2 and rest[0] == "paths-info":
                self._kind = "paths_info"
                commit = self._open(repo_id, "/".join(rest[1:]))[1]
                return self._send_json(paths_info_entries(commit, self._posted_paths(body)))
        if len(segments) >= 5 and segments[2] == "resolve" and read:
            repo_id, rev, path = f"{segments[0]}/{segments[1]}", segments[3], "/".join(segments[4:])
            self._kind = "head" if method == "HEAD" else "range" if "Range" in self.headers else "get"
            repo, commit = self._open(repo_id, rev)
            file = commit.files.get(path)
            if file is None:
                raise entry_not_found(path, commit)
            return self._serve_file(method, repo.id, commit, file, redirect=self.server.hub.cdn and file.lfs)
        raise HttpError(404, None, f"no such endpoint: {method} {'/'.join(segments)}")

    def _route_cdn(self, method: str, segments: list[str]) -> None:
        self._kind = f"cdn_{'head' if method == 'HEAD' else 'range' if 'Range' in self.headers else 'get'}"
        wanted = len(segments) >= 5 and segments[0] == "cdn" and SHA_PATTERN.fullmatch(segments[3])
        if wanted and method in ("GET", "HEAD"):
            repo = self.server.hub.store.get(f"{segments[1]}/{segments[2]}")
            commit = repo.resolve(segments[3]) if repo else None
            file = commit.files.get("/".join(segments[4:])) if commit else None
            if file is not None:
                return self._serve_file(method, repo.id, commit, file, redirect=False)
        raise HttpError(404, None, "NoSuchKey")

    def _open(self, repo_id: str, rev: str) -> tuple[Repo, Commit]:
        return open_commit(self.server.hub.store, repo_id, rev, self._token())

    def _posted_paths(self, body: bytes) -> list[str]:
        if "json" in (self.headers.get("Content-Type") or ""):
            return json.loads(body or b"{}").get("paths") or []
        return parse_qs(body.decode("utf-8", "replace")).get("paths", [])

    def _control(self, method: str, segments: list[str], body: bytes) -> None:
        hub, target = self.server.hub, (method, "/".join(segments))
        if target == ("POST", "_faults"):
            try:
                return self._send_json(hub.faults.add(**json.loads(body)).as_dict())
            except (ForensicsError, TypeError, ValueError, AttributeError) as exc:
                raise HttpError(400, None, f"bad fault rule: {exc}") from exc
        actions = {("GET", "_stats"): hub.stats, ("POST", "_stats/reset"): hub.reset_stats,
                   ("GET", "_faults"): lambda: [rule.as_dict() for rule in hub.faults.rules],
                   ("DELETE", "_faults"): hub.faults.clear}
        if target not in actions:
            raise HttpError(404, None, f"no such control endpoint: {method} {target[1]}")
        answer = actions[target]()
        self._send_json({"ok": True} if answer is None else answer)

    # ---- file answers --------------------------------------------------------------------------------------------

    def _serve_file(self, method: str, repo_id: str, commit: Commit, file: RepoFile, redirect: bool) -> None:
        hub, origin = self.server.hub, self.server.name
        carries_body = not redirect and method == "GET"
        fault, changed = hub.faults.decide(origin, method, repo_id, file.path, carries_body)
        if changed:
            file = changed_file(file)
        self._fault = fault.kind if fault else None
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{file.etag}"', "Accept-Ranges": "bytes"}
        if file.lfs:
            headers.update({"X-Linked-Etag": f'"{file.etag}"', "X-Linked-Size": str(file.size)})
        kind = fault.kind if fault else None
        if kind == "slow":
            time.sleep(fault.delay_s)
        if kind in STATUS_FAULTS:
            extra = {"Retry-After": str(int(fault.retry_after))} if kind == "429" else {}
            raise HttpError(int(kind), None, f"injected fault {kind}", extra)
        if redirect:
            expires = int(time.time()) + 3600
            location = f"{hub.cdn_url}/cdn/{repo_id}/{commit.sha}/{quote(file.path)}?Expires={expires}&Signature={hub.signature}"
            return self._send(302, {**headers, "Location": location}, b"", head=method == "HEAD")
        span = None if kind == "ignore-range" else byte_range(self.headers.get("Range"), file.size)
        if kind == "wrong-range":
            span = shifted(span or (0, file.size), fault.shift, file.size)
        headers["Content-Type"] = "application/octet-stream"
        if span is not None:
            headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{file.size}"
        start, end = span or (0, file.size)
        cut = (end - start) // 2 if kind in ("drop", "truncate") else None
        if kind == "oversize":  # a mirror sending more than the file has, and saying so in Content-Length
            body = file.read(start, end) + bytes(fault.extra) if method == "GET" else b""
            return self._send(206 if span else 200, headers, body, head=method == "HEAD")
        self._send(206 if span else 200, headers, (file, start, end), head=method == "HEAD",
                   cut=cut, abrupt=kind == "drop")

    # ---- writing -------------------------------------------------------------------------------------------------

    def _send_json(self, value: object, head: bool = False, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(value, default=str).encode()
        self._send(200, {"Content-Type": "application/json", **(headers or {})}, body, head=head)

    def _send_error(self, err: HttpError, method: str) -> None:
        if self._entry is not None:  # too late for a proper answer: hang up so the client sees a broken body
            self.close_connection = True
            return
        message = err.message.encode("ascii", "replace").decode()
        headers = {"Content-Type": "application/json", "X-Error-Message": message, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        try:
            self._send(err.status, headers, json.dumps({"error": err.message}).encode(), head=method == "HEAD")
        except OSError:
            self.close_connection = True

    def _send(self, status: int, headers: dict[str, str], body: bytes | tuple[RepoFile, int, int], *,
              head: bool = False, cut: int | None = None, abrupt: bool = False) -> None:
        """Answer with an exact Content-Length; with `cut`, stop after that many body bytes and hang up."""
        hub = self.server.hub
        length = len(body) if isinstance(body, bytes) else body[2] - body[1]
        limit = 0 if head else length if cut is None else cut
        if not self._is_control:
            self._log_answer(status, limit)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        try:
            for chunk in _chunks(body, limit, chunk_size(hub.bandwidth)):
                hub.traffic.throttle(len(chunk), hub.bandwidth)
                self.wfile.write(chunk)
                self._sent += len(chunk)
        finally:
            if self._entry is not None and self._sent != limit:
                hub.traffic.correct_bytes(self._entry, self._sent)
        if self._sent < limit:  # the file shrank under us: never pretend the body was complete
            cut = self._sent
        if cut is not None and not head:
            self._hang_up(abrupt)

    def _hang_up(self, abrupt: bool) -> None:
        self.close_connection = True
        if abrupt:  # linger 0 makes close() send RST: the client sees a reset, not a clean end of stream
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()


def _int(query: dict, name: str, default: int) -> int:
    try:
        return max(0, int(query.get(name, [default])[0]))
    except ValueError:
        raise HttpError(400, None, f"{name} must be a non-negative integer") from None


def _chunks(body: bytes | tuple[RepoFile, int, int], limit: int, size: int):
    if isinstance(body, bytes):
        yield body[:limit]
        return
    file, start, _ = body
    for offset in range(start, start + limit, size):
        data = file.read(offset, min(offset + size, start + limit))
        if not data:
            return
        yield data


class Origin(ThreadingHTTPServer):
    """One listening origin ("hub" or "cdn") that can hang up its keep-alive connections on stop."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # the default backlog of 5 drops bursts of parallel connects (1 s SYN retry)

    def __init__(self, address: tuple[str, int], hub, name: str):
        self.hub, self.name = hub, name
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, HubRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup, which can stall offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self):
        connection, address = super().get_request()
        with self._connections_lock:
            self._connections.add(connection)
        return connection, address

    def shutdown_request(self, request) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:
        pass  # clients hanging up mid-answer is normal here (faults, cancelled reads)
