#!/usr/bin/env python3
"""A Git smart-HTTP origin that authenticates like Gogs, for the end-to-end tests.

    git_origin.py PORT ROOT TOKENS_JSON LOG_FILE

ROOT holds bare repositories as ROOT/owner/repo.git. TOKENS_JSON maps user -> Gogs-style
access token. As in Gogs, git requests authenticate with Basic auth: a request is
authenticated when the password is that user's token, or when the user name or the
password is any user's token; API requests may also send `Authorization: token <token>`.
Anything else gets 401 with `WWW-Authenticate: Basic realm="."`. Authenticated git
requests are served by the real `git http-backend` (CGI); of Gogs' API, only
`GET /api/v1/repos/OWNER/REPO` is answered (`{"full_name", "private"}`, or 404). Every
other path is a page of the web UI, which signs people in as Gogs' reverse-proxy
authentication does: an HTML page naming the path and the user in `X-WEBAUTH-USER` (or
"anonymous"). Git LFS is served as Gogs serves it, with the same authentication: the
batch API (`POST OWNER/REPO.git/info/lfs/objects/batch`, basic transfers whose hrefs point
at GIT_ORIGIN_PUBLIC_URL, the gateway, so git-lfs sends its credentials there) and the
objects (`PUT`/`GET .../info/lfs/objects/basic/OID`, kept in ROOT/.lfs). Every request's method, path, headers and the SHA-256 and size of its body
are appended to LOG_FILE as one JSON line.

Faults for serve's fault tests: when the environment names a file in GIT_ORIGIN_FAULTS,
each request reads it, and its content injects one:
  reset-upload-pack-response   a fetch's pack is cut by a connection reset after 8 KiB
  reset-receive-pack-request   a push's pack is cut by a connection reset after 8 KiB of
                               it arrived, before git http-backend sees any of it
  hang-api                     API requests are answered only after 30 s
"""
import base64
import hashlib
import html
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, ROOT, TOKENS_JSON, LOG_FILE = sys.argv[1:5]
TOKENS = json.loads(TOKENS_JSON)
BY_TOKEN = {token: user for user, token in TOKENS.items()}
LOG_LOCK = threading.Lock()
FAULT_AFTER = 8192


GIT_SERVICES = ("info/", "git-upload-pack", "git-receive-pack", "objects/", "HEAD")


def is_git(path):
    parts = path.lstrip("/").split("/", 2)
    return len(parts) == 3 and parts[2].startswith(GIT_SERVICES)


def fault():
    path = os.environ.get("GIT_ORIGIN_FAULTS")
    try:
        with open(path) as f:
            return f.read().strip()
    except (TypeError, FileNotFoundError):
        return ""


def authenticate(header, api=False):
    if api and header and header.lower().startswith("token "):
        return BY_TOKEN.get(header[6:].strip())
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except Exception:
        return None
    if TOKENS.get(user) == password:
        return user
    return BY_TOKEN.get(user) or BY_TOKEN.get(password)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        # As Go's net package (and so Gogs) does: headers and body go out as separate
        # writes, and with Nagle a kept-alive client would wait out its delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def body_chunks(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk

    def reset(self):
        """Closes the connection with a TCP reset (SO_LINGER 0), as a crashed origin would."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def record(self, digest, size):
        entry = {"method": self.command, "path": self.path, "headers": dict(self.headers.items()),
                 "body_sha256": digest, "body_bytes": size}
        with LOG_LOCK, open(LOG_FILE, "a") as log:
            log.write(json.dumps(entry) + "\n")

    def handle_any(self):
        api = self.path.startswith("/api/v1/")
        if not api and not is_git(self.path.partition("?")[0]):
            self.answer_web()
            return
        user = authenticate(self.headers.get("Authorization"), api)
        if user is None:
            drained = hashlib.sha256()
            size = 0
            for chunk in self.body_chunks():
                drained.update(chunk)
                size += len(chunk)
            self.record(drained.hexdigest(), size)
            body = b"Unauthorized\n"
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="."')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        path, _, query = self.path.partition("?")
        if api:
            self.answer_api(path)
            return
        parts = path.lstrip("/").split("/", 2)
        if len(parts) < 3:
            self.send_error(404)
            return
        owner, repo, rest = parts
        if rest.startswith("info/lfs/"):
            self.answer_lfs(f"{owner}/{repo.removesuffix('.git')}", rest[len("info/lfs/"):])
            return
        if not repo.endswith(".git"):
            repo += ".git"
        env = dict(os.environ, GIT_PROJECT_ROOT=ROOT, GIT_HTTP_EXPORT_ALL="1",
                   PATH_INFO=f"/{owner}/{repo}/{rest}", QUERY_STRING=query,
                   REQUEST_METHOD=self.command, REMOTE_USER=user, REMOTE_ADDR="127.0.0.1",
                   CONTENT_TYPE=self.headers.get("Content-Type", ""),
                   HTTP_GIT_PROTOCOL=self.headers.get("Git-Protocol", ""))
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        injected = fault()
        if injected == "reset-receive-pack-request" and rest == "git-receive-pack":
            size = 0
            for chunk in self.body_chunks():
                size += len(chunk)
                if size >= FAULT_AFTER:
                    break
            self.record(None, size)
            self.reset()
            return
        proc = subprocess.Popen(["git", "http-backend"], env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        digest = hashlib.sha256()
        size = 0
        for chunk in self.body_chunks():
            digest.update(chunk)
            size += len(chunk)
            proc.stdin.write(chunk)
        proc.stdin.close()
        self.record(digest.hexdigest(), size)
        status = "200 OK"
        headers = []
        while True:
            line = proc.stdout.readline().decode("latin-1").rstrip("\r\n")
            if not line:
                break
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = value.strip()
            else:
                headers.append((name, value.strip()))
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason or None)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        cut = injected == "reset-upload-pack-response" and rest == "git-upload-pack"
        sent = 0
        while True:
            chunk = proc.stdout.read1(1 << 16)
            if not chunk:
                break
            if cut:
                chunk = chunk[:FAULT_AFTER - sent]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
            if cut and sent >= FAULT_AFTER:
                proc.kill()
                proc.wait()
                # A reset discards what the peer has not read yet: let the 8 KiB get through.
                time.sleep(0.3)
                self.reset()
                return
        self.wfile.write(b"0\r\n\r\n")
        proc.wait()

    def answer_lfs(self, repo, rest):
        body = b"".join(self.body_chunks())
        self.record(hashlib.sha256(body).hexdigest(), len(body))
        store = os.path.join(ROOT, ".lfs")
        os.makedirs(store, exist_ok=True)
        public = os.environ.get("GIT_ORIGIN_PUBLIC_URL", "")
        if rest == "objects/batch" and self.command == "POST":
            batch = json.loads(body or b"{}")
            objects = []
            for obj in batch.get("objects", []):
                oid = obj["oid"]
                href = f"{public}/{repo}.git/info/lfs/objects/basic/{oid}"
                have = os.path.exists(os.path.join(store, oid))
                if batch.get("operation") == "upload":
                    actions = {} if have else {"upload": {"href": href}}
                    objects.append({"oid": oid, "size": obj["size"], "actions": actions})
                elif have:
                    objects.append({"oid": oid, "size": obj["size"], "actions": {"download": {"href": href}}})
                else:
                    objects.append({"oid": oid, "size": obj["size"], "error": {"code": 404, "message": "not found"}})
            self.send_json(200, {"transfer": "basic", "objects": objects}, "application/vnd.git-lfs+json")
        elif rest.startswith("objects/basic/") and self.command == "PUT":
            oid = rest[len("objects/basic/"):]
            if hashlib.sha256(body).hexdigest() != oid:
                self.send_json(422, {"message": "object does not match its oid"}, "application/vnd.git-lfs+json")
                return
            with open(os.path.join(store, oid), "wb") as f:
                f.write(body)
            self.send_json(200, {}, "application/vnd.git-lfs+json")
        elif rest.startswith("objects/basic/") and self.command == "GET":
            try:
                with open(os.path.join(store, rest[len("objects/basic/"):]), "rb") as f:
                    content = f.read()
            except (FileNotFoundError, IsADirectoryError):
                self.send_json(404, {"message": "not found"}, "application/vnd.git-lfs+json")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)
        else:
            self.send_json(404, {"message": "not found"}, "application/vnd.git-lfs+json")

    def send_json(self, status, value, content_type):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def answer_web(self):
        self.record(None, 0)
        user = self.headers.get("X-WEBAUTH-USER")
        user = user if user in TOKENS else "anonymous"
        path = html.escape(self.path.partition("?")[0])
        body = (f'<!DOCTYPE html><html><head><title>{path}</title></head><body>'
                f'<h1 id="page">{path}</h1><p id="user">{user}</p></body></html>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def answer_api(self, path):
        self.record(None, 0)
        if fault() == "hang-api":
            time.sleep(30)
        parts = path.split("/")
        found = (len(parts) == 6 and parts[3] == "repos"
                 and os.path.isdir(os.path.join(ROOT, parts[4], parts[5] + ".git")))
        if found:
            body = json.dumps({"full_name": f"{parts[4]}/{parts[5]}", "private": False}).encode()
        else:
            body = b'{"message":"Not Found"}'
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = handle_any
    do_POST = handle_any
    do_PUT = handle_any


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(PORT)), Handler)
    print("ready", flush=True)
    server.serve_forever()
