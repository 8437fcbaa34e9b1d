#!/usr/bin/env python3
"""A stand-in for the model server: takes --bind ADDR and --model-dir DIR, serves
/readyz and /healthz, and answers every other GET with its own port."""
import argparse
import http.server

ap = argparse.ArgumentParser()
ap.add_argument("--bind", required=True)
ap.add_argument("--model-dir", required=True)
a = ap.parse_args()
host, port = a.bind.rsplit(":", 1)


class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok" if self.path in ("/readyz", "/healthz") else port.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer((host, int(port)), H).serve_forever()
