"""A tiny local stand-in for the Hub endpoints ``vqtool upload`` calls, for offline tests.

Implements just: repo creation (``POST /api/repos/create``, 409 when it exists), README YAML
validation, ``preupload`` (binary weight files answered ``lfs``, text ``regular``), the git-LFS
batch API with a basic ``upload`` + ``verify`` action, the LFS ``PUT`` itself, and the ndjson
``commit`` (regular files base64, LFS files by sha256). Files land in ``HubStub.repos[repo_id]``;
every request is recorded with its Authorization header so tests can check the token was used.

Listens on 127.0.0.1 only, on a free port, and shuts itself down after ``lifetime`` seconds
even if a test forgets to (use it as a context manager).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".mp4")


@dataclass
class Request:
    method: str
    path: str
    authorization: str | None


@dataclass
class HubStub:
    lifetime: float = 60.0
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    commits: list[dict] = field(default_factory=list)
    private: dict[str, bool] = field(default_factory=dict)
    fail_commit_with: int | None = None  # answer the commit with this HTTP status

    def __enter__(self) -> "HubStub":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                stub._handle(self, "POST")

            def do_PUT(self) -> None:
                stub._handle(self, "PUT")

            def do_GET(self) -> None:
                stub._handle(self, "GET")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime, self.server.shutdown)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    # ---- request handling ----
    def _reply(self, h: BaseHTTPRequestHandler, status: int, body: dict | None = None) -> None:
        data = json.dumps(body if body is not None else {}).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _body(self, h: BaseHTTPRequestHandler) -> bytes:
        n = int(h.headers.get("Content-Length") or 0)
        if n:
            return h.rfile.read(n)
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(h.rfile.readline().strip(), 16)
                if size == 0:
                    h.rfile.readline()
                    return out
                out += h.rfile.read(size)
                h.rfile.readline()
        return b""

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = h.path.split("?", 1)[0]
        self.requests.append(Request(method, path, h.headers.get("Authorization")))
        body = self._body(h)
        try:
            if method == "POST" and path == "/api/repos/create":
                return self._create(h, json.loads(body))
            if method == "POST" and path == "/api/validate-yaml":
                return self._reply(h, 200, {"errors": [], "warnings": []})
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/([^/]+)", path)
            if method == "POST" and m:
                return self._preupload(h, m.group(1), json.loads(body))
            m = re.fullmatch(r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)
            if method == "POST" and m:
                return self._batch(h, json.loads(body))
            m = re.fullmatch(r"/lfs/(\w+)(/verify)?", path)
            if m and method == "PUT":
                return self._lfs_put(h, m.group(1), body)
            if m and method == "POST" and m.group(2):
                return self._reply(h, 200 if m.group(1) in self.lfs else 404, {})
            m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/([^/]+)", path)
            if method == "POST" and m:
                return self._commit(h, m.group(1), body)
        except (ValueError, KeyError) as exc:
            return self._reply(h, 400, {"error": f"stub: bad request: {exc}"})
        self._reply(h, 404, {"error": f"stub: no endpoint {method} {path}"})

    def _create(self, h, payload: dict) -> None:
        repo = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        url = f"{self.url}/{repo}"
        if repo in self.repos:
            return self._reply(h, 409, {"error": "You already created this model repo", "url": url})
        self.repos[repo] = {}
        self.private[repo] = payload.get("visibility") == "private" or bool(payload.get("private"))
        self._reply(h, 200, {"url": url, "name": repo})

    def _preupload(self, h, repo: str, payload: dict) -> None:
        if repo not in self.repos:
            return self._reply(h, 404, {"error": "Repository not found"})
        files = [{"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular",
                  "shouldIgnore": False, "oid": None} for f in payload["files"]]
        self._reply(h, 200, {"files": files, "commitOid": "0" * 40})

    def _batch(self, h, payload: dict) -> None:
        objects = [{"oid": o["oid"], "size": o["size"],
                    "actions": {"upload": {"href": f"{self.url}/lfs/{o['oid']}"},
                                "verify": {"href": f"{self.url}/lfs/{o['oid']}/verify"}}}
                   for o in payload["objects"]]
        self._reply(h, 200, {"transfer": "basic", "objects": objects})

    def _lfs_put(self, h, oid: str, body: bytes) -> None:
        if hashlib.sha256(body).hexdigest() != oid:
            return self._reply(h, 400, {"error": "sha256 mismatch"})
        self.lfs[oid] = body
        self._reply(h, 200, {})

    def _commit(self, h, repo: str, body: bytes) -> None:
        if self.fail_commit_with:
            return self._reply(h, self.fail_commit_with, {"error": "stub: commit refused"})
        if repo not in self.repos:
            return self._reply(h, 404, {"error": "Repository not found"})
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(x["value"] for x in lines if x["key"] == "header")
        files = {}
        for item in lines:
            v = item["value"]
            if item["key"] == "file":
                files[v["path"]] = base64.b64decode(v["content"])
            elif item["key"] == "lfsFile":
                if v["oid"] not in self.lfs:
                    return self._reply(h, 422, {"error": f"LFS object {v['oid']} was never uploaded"})
                files[v["path"]] = self.lfs[v["oid"]]
        self.repos[repo].update(files)
        oid = hashlib.sha1(body).hexdigest()
        self.commits.append({"repo": repo, "summary": header["summary"], "files": sorted(files),
                             "lfs": sorted(x["value"]["path"] for x in lines if x["key"] == "lfsFile")})
        self._reply(h, 200, {"commitUrl": f"{self.url}/{repo}/commit/{oid}", "commitOid": oid})
