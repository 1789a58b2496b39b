"""A tiny pub/sub subscriber for rapr: tells its sidecar it wants the `orders` topic of the
`pubsub` component, and prints each order the sidecar delivers.

Standard library only. Run it with its sidecar (see README.md, "Pub/sub with curl"):
    rapr run --app-id shop --app-port 5001 --resources-path ./examples/components -- python3 examples/subscriber.py
`rapr run` gives the app APP_PORT, the port the sidecar delivers events to.
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("APP_PORT", "5001"))

# What the sidecar asks for at start (GET /dapr/subscribe): topic `orders` of the component
# `pubsub`, delivered to POST /orders.
SUBSCRIPTIONS = [{"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}]


class Handler(BaseHTTPRequestHandler):
    def reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/dapr/subscribe":
            self.reply(SUBSCRIPTIONS)
        else:
            self.send_error(404)

    def do_POST(self):
        if self.path != "/orders":
            self.send_error(404)
            return
        # The event is a CloudEvent; what the publisher sent is its `data`.
        event = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        order = event["data"]
        print(f"received order {order['orderId']}: {order['item']}", flush=True)
        # SUCCESS acknowledges the message; RETRY would have it delivered again.
        self.reply({"status": "SUCCESS"})

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
