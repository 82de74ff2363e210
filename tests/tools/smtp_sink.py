#!/usr/bin/env python3
"""A real SMTP server on loopback that keeps every message it accepts, for tests.

    python3 tests/tools/smtp_sink.py --port N --dir DIR [--auth user:pass] [--rcpt-reply "451 ..."]
    python3 tests/tools/smtp_sink.py --parse FILE.eml

Serve mode (aiosmtpd) listens on 127.0.0.1:N and prints "ready" on stdout once it accepts
connections. Each accepted message is written as DIR/<n>.eml (the exact bytes received) and
DIR/<n>.json (the envelope: mail_from, rcpt_tos, the authenticated login or null), numbered
from 1; both are written under a temporary name and renamed, so a reader never sees half a file,
and the .json is renamed after the .eml, so its presence means the message is complete.

--auth user:pass makes AUTH PLAIN/LOGIN mandatory (allowed without TLS: this is loopback) and
accepts only that pair. --rcpt-reply answers every RCPT TO with the given reply (for example
"451 4.3.0 Try again later" or "550 5.1.1 No such user"), to test how a client handles them.

Parse mode prints the message as JSON (headers, and every leaf MIME part with its content type,
charset, transfer encoding and decoded text), parsed by Python's standard e-mail package, which
is independent of the sender under test.
"""

import argparse
import asyncio
import json
import os
import signal
import sys
import warnings


def parse_message(path):
    from email import policy
    from email.parser import BytesParser

    with open(path, "rb") as handle:
        message = BytesParser(policy=policy.default).parse(handle)
    parts = []
    for part in message.walk():
        if part.is_multipart():
            continue
        parts.append(
            {
                "content_type": part.get_content_type(),
                "charset": part.get_content_charset(),
                "transfer_encoding": part.get("Content-Transfer-Encoding"),
                "content": part.get_content(),
            }
        )
    return {
        "headers": [[name, str(value)] for name, value in message.items()],
        "content_type": message.get_content_type(),
        "parts": parts,
    }


class Sink:
    def __init__(self, directory, rcpt_reply):
        self.directory = directory
        self.rcpt_reply = rcpt_reply
        self.count = len([n for n in os.listdir(directory) if n.endswith(".json")])

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        stem = os.path.join(self.directory, str(self.count))
        write_atomically(stem + ".eml", envelope.original_content or envelope.content)
        login = session.auth_data
        if isinstance(login, bytes):
            login = login.decode("utf-8", "replace")
        envelope_json = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "login": login if session.authenticated else None,
        }
        write_atomically(stem + ".json", json.dumps(envelope_json).encode())
        return "250 Message accepted for delivery"


def write_atomically(path, data):
    temporary = path + ".tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class Authenticator:
    def __init__(self, user, password):
        self.user = user.encode()
        self.password = password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.user
            and auth_data.password == self.password
        ):
            return AuthResult(success=True, auth_data=auth_data.login)
        return AuthResult(success=False, handled=False)


async def serve(args):
    from aiosmtpd.smtp import SMTP

    os.makedirs(args.dir, exist_ok=True)
    handler = Sink(args.dir, args.rcpt_reply)
    options = {"hostname": "sink.test", "enable_SMTPUTF8": True}
    if args.auth:
        # Plain AUTH is deliberate here (loopback only); aiosmtpd's warning would be noise.
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
        user, _, password = args.auth.partition(":")
        options.update(
            authenticator=Authenticator(user, password),
            auth_required=True,
            auth_require_tls=False,
        )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, **options), host="127.0.0.1", port=args.port
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int)
    parser.add_argument("--dir")
    parser.add_argument("--auth", help="user:pass; makes AUTH mandatory")
    parser.add_argument("--rcpt-reply", help='answer every RCPT TO with this, e.g. "451 4.3.0 later"')
    parser.add_argument("--parse", metavar="FILE", help="print a received message as JSON")
    args = parser.parse_args()
    if args.parse:
        json.dump(parse_message(args.parse), sys.stdout, ensure_ascii=False)
        return
    if args.port is None or not args.dir:
        parser.error("--port and --dir are required to serve")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
