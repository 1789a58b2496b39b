"""An app that declares an actor type to its sidecar (standard library only): it answers the
sidecar's GET /dapr/config with its actor types, so the sidecar registers them with placement.
Usage: python3 actor_host.py PORT TYPE..."""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT = int(sys.argv[1])
TYPES = sys.argv[2:] or ["Cat"]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/dapr/config":
            self.send_response(404)
            self.end_headers()
            return
        body = json.dumps({"entities": TYPES}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
