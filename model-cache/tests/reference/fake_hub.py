"""A stand-in for the Hugging Face Hub's file endpoint, enough for the hf-hub crate.

Serves GET /<org>/<name>/resolve/<revision>/<file> from a directory, with Range
support and the headers hf-hub reads (etag, x-repo-commit, content-range). Prints
"listening <port>" once ready. Counts full-file downloads per file name and serves
them as JSON at /_stats.
"""
import hashlib
import http.server
import json
import os
import sys
import threading

ROOT = sys.argv[1]
COUNTS = {}
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/_stats":
            with LOCK:
                self._send(200, json.dumps(COUNTS).encode(), {})
            return
        parts = self.path.split("/")
        # ['', org, name, 'resolve', revision, file]
        if len(parts) != 6 or parts[3] != "resolve":
            self._send(404, b"not found", {})
            return
        revision, name = parts[4], parts[5]
        path = os.path.join(ROOT, name)
        if not os.path.isfile(path):
            self._send(404, b"entry not found", {"x-error-code": "EntryNotFound"})
            return
        data = open(path, "rb").read()
        etag = hashlib.sha256(data).hexdigest()
        start, end = 0, len(data) - 1
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[len("bytes="):].partition("-")
            start = int(a)
            end = int(b) if b else len(data) - 1
        if start == 0 and end == len(data) - 1:
            with LOCK:
                COUNTS[name] = COUNTS.get(name, 0) + 1
        body = data[start : end + 1]
        headers = {
            "etag": f'"{etag}"',
            "x-repo-commit": revision,
            "content-range": f"bytes {start}-{end}/{len(data)}",
        }
        self._send(206 if rng else 200, body, headers)

    def _send(self, status, body, headers):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Clients (hf-hub's size probe) hang up mid-response by design: not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


server = Server(("127.0.0.1", 0), Handler)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
