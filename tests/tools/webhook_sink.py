#!/usr/bin/env python3
"""A webhook receiver on loopback that checks StackBox's signature itself, for tests.

    python3 tests/tools/webhook_sink.py --port N --dir DIR --secret-file FILE [--fail-first K]

Listens on 127.0.0.1:N and prints "ready" once it accepts connections. Each POST is written as
DIR/<n>.json: {"path", "delivery", "signature", "verified", "age_seconds", "body"}, where
"verified" is this script's own check of the StackBox-Signature header (HMAC-SHA256 of
"{t}.{body}" keyed with the file's bytes, trailing newline removed), independent of the
sender's code. Written under a temporary name and renamed, so a reader never sees half a file.
It answers 204, or 503 to the first K requests with --fail-first K.
"""

import argparse
import hashlib
import hmac
import http.server
import json
import os
import sys
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--fail-first", type=int, default=0)
    args = parser.parse_args()
    with open(args.secret_file, "rb") as handle:
        secret = handle.read().rstrip(b"\r\n")
    state = {"count": 0, "failed": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            header = self.headers.get("StackBox-Signature", "")
            parts = dict(
                item.split("=", 1) for item in header.split(",") if "=" in item
            )
            stamp = parts.get("t", "")
            expected = hmac.new(
                secret, stamp.encode() + b"." + body, hashlib.sha256
            ).hexdigest()
            signatures = [
                item.split("=", 1)[1]
                for item in header.split(",")
                if item.startswith("v1=")
            ]
            verified = any(hmac.compare_digest(expected, s) for s in signatures)
            age = time.time() - int(stamp) if stamp.isdigit() else None
            state["count"] += 1
            record = {
                "path": self.path,
                "delivery": self.headers.get("StackBox-Delivery"),
                "signature": header,
                "verified": verified,
                "age_seconds": age,
                "body": json.loads(body.decode("utf-8")) if body else None,
            }
            name = os.path.join(args.dir, "%d.json" % state["count"])
            with open(name + ".tmp", "w") as out:
                json.dump(record, out)
            os.rename(name + ".tmp", name)
            if state["failed"] < args.fail_first:
                state["failed"] += 1
                self.send_response(503)
            else:
                self.send_response(204)
            self.end_headers()

        def log_message(self, *_):
            pass

    server = http.server.HTTPServer(("127.0.0.1", args.port), Handler)
    print("ready", flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
