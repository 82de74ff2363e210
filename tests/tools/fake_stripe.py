#!/usr/bin/env python3
"""A stand-in for Stripe's API on loopback, for the end-to-end tests.

It answers `POST /v1/checkout/sessions` the way Stripe does, after checking what Stripe
would check: the secret key as a Bearer token, a form-encoded body, the fields a
subscription Checkout needs, and an Idempotency-Key (a repeated key returns the same session,
as Stripe does). Every request is appended to `--log` as one JSON line, so a test can assert
on exactly what StackBox sent.

    python3 tests/tools/fake_stripe.py --port N --key sk_test_x --log FILE

Prints "ready" once it listens.
"""

import argparse
import json
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

REQUIRED = [
    "mode",
    "line_items[0][price]",
    "line_items[0][quantity]",
    "success_url",
    "cancel_url",
    "client_reference_id",
    "customer_email",
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    sessions = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def error(self, status, kind, message, param=None):
            error = {"type": kind, "message": message}
            if param:
                error["param"] = param
            self.answer(status, {"error": error})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode()
            form = dict(parse_qsl(raw, keep_blank_values=True))
            record = {
                "method": "POST",
                "path": self.path,
                "authorization_ok": self.headers.get("Authorization") == f"Bearer {args.key}",
                "content_type": self.headers.get("Content-Type"),
                "idempotency_key": self.headers.get("Idempotency-Key"),
                "stripe_version": self.headers.get("Stripe-Version"),
                "form": form,
            }
            with lock:
                with open(args.log, "a") as log:
                    log.write(json.dumps(record) + "\n")
            if not record["authorization_ok"]:
                return self.error(401, "invalid_request_error", "Invalid API Key provided")
            if self.path != "/v1/checkout/sessions":
                return self.error(404, "invalid_request_error", f"Unrecognized request URL (POST: {self.path})")
            if not (record["content_type"] or "").startswith("application/x-www-form-urlencoded"):
                return self.error(400, "invalid_request_error", "Invalid request: form encoding expected")
            for field in REQUIRED:
                if not form.get(field):
                    return self.error(400, "invalid_request_error", f"Missing required param: {field}.", field)
            if form["mode"] != "subscription":
                return self.error(400, "invalid_request_error", "mode must be subscription here", "mode")
            if not form["line_items[0][price]"].startswith("price_"):
                return self.error(400, "invalid_request_error",
                                  f"No such price: '{form['line_items[0][price]']}'", "line_items[0][price]")
            key = record["idempotency_key"]
            with lock:
                if key and key in sessions:
                    return self.answer(200, sessions[key])
                session_id = "cs_test_" + secrets.token_hex(12)
                session = {
                    "id": session_id,
                    "object": "checkout.session",
                    "mode": "subscription",
                    "client_reference_id": form["client_reference_id"],
                    "customer_email": form["customer_email"],
                    "url": f"https://checkout.stripe.com/c/pay/{session_id}",
                    "status": "open",
                }
                if key:
                    sessions[key] = session
            self.answer(200, session)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("ready", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
