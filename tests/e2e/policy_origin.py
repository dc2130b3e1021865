"""Serves policy files the way a Gogs raw-file API does, for serve's --policy-url tests.

    python3 policy_origin.py PORT DIR TOKEN

GET /NAME answers the file DIR/NAME, only with `Authorization: token TOKEN` (401
otherwise), with an ETag (the SHA-256 of the content) and 304 to a matching
If-None-Match. Every answer is logged on stderr as `METHOD PATH STATUS`. The process is
stopped by its PID.
"""
import hashlib
import http.server
import os
import sys

PORT, ROOT, TOKEN = int(sys.argv[1]), sys.argv[2], sys.argv[3]


class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        sys.stderr.write(f"{self.command} {self.path} {status}\n")
        sys.stderr.flush()

    def do_GET(self):
        if self.headers.get("Authorization") != f"token {TOKEN}":
            return self.answer(401, b"token required\n")
        path = os.path.join(ROOT, os.path.basename(self.path))
        try:
            with open(path, "rb") as f:
                body = f.read()
        except OSError:
            return self.answer(404, b"not found\n")
        etag = '"' + hashlib.sha256(body).hexdigest() + '"'
        if self.headers.get("If-None-Match") == etag:
            return self.answer(304, headers=[("ETag", etag)])
        self.answer(200, body, [("ETag", etag), ("Content-Type", "text/plain")])

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
