"""A webhook receiver that verifies each request with the published `standardwebhooks` library
(PyPI), as a team's own receiver would. Listens on loopback, prints `listening on PORT`, then one
line per request: `verified <json body>` (answered 200 with an id) or `refused <reason>`
(answered 401).

usage: standard_webhooks.py SECRET
"""

import http.server
import json
import sys

from standardwebhooks import Webhook, WebhookVerificationError

webhook = Webhook(sys.argv[1])


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            payload = webhook.verify(body, dict(self.headers.items()))
        except WebhookVerificationError as error:
            print(f"refused {error}", flush=True)
            self.send_response(401)
            self.end_headers()
            return
        print(f"verified {json.dumps(payload)}", flush=True)
        answer = json.dumps({"id": self.headers["webhook-id"]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()
