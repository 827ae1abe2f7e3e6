#!/usr/bin/env python3
"""stateful_http.py: a small stateful web service for the tests of HTTP in ordered mode.

POST /counter/NAME adds one to a counter and answers its new value; GET /counter/NAME reads
it; PUT /kv/KEY stores the body, GET /kv/KEY reads it (404 if missing), DELETE /kv/KEY
removes it; GET /hang never answers. Every 7th answer on a connection says Connection: close and closes it (normal
HTTP: resh reconnects without blame).

--wrong-after N: once a counter passes N, POST answers (and stores) one too many: a bug
planted in this replica. --once FILE: the bug fires once (creating FILE), and never while
FILE exists, so a restarted replica behaves.

Usage: python3 stateful_http.py PORT [--wrong-after N] [--once FILE]
"""
import http.server
import json
import os
import sys
import threading
import time

lock = threading.Lock()
counters = {}
store = {}
args = sys.argv[2:]
wrong_after = int(args[args.index("--wrong-after") + 1]) if "--wrong-after" in args else None
once = args[args.index("--once") + 1] if "--once" in args else None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    served = 0

    def answer(self, status, body, kind="application/json"):
        self.served += 1
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        if self.served % 7 == 0:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        with lock:
            self._do_POST()

    def _do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        if not self.path.startswith("/counter/"):
            return self.answer(404, '{"error": "no such resource"}')
        name = self.path[len("/counter/"):]
        value = counters.get(name, 0) + 1
        if wrong_after is not None and value > wrong_after and not (once and os.path.exists(once)):
            value += 1
            if once:
                open(once, "w").close()
        counters[name] = value
        self.answer(200, json.dumps({"name": name, "value": value}))

    def do_GET(self):
        if self.path == "/hang":
            # An answer that never comes (outside the lock: the service goes on).
            time.sleep(3600)
            return
        with lock:
            self._do_GET()

    def _do_GET(self):
        if self.path.startswith("/counter/"):
            name = self.path[len("/counter/"):]
            return self.answer(200, json.dumps({"name": name, "value": counters.get(name, 0)}))
        if self.path.startswith("/kv/"):
            key = self.path[len("/kv/"):]
            if key not in store:
                return self.answer(404, '{"error": "no such key"}')
            return self.answer(200, store[key], "application/octet-stream")
        self.answer(404, '{"error": "no such resource"}')

    def do_PUT(self):
        with lock:
            self._do_PUT()

    def _do_PUT(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if not self.path.startswith("/kv/"):
            return self.answer(404, '{"error": "no such resource"}')
        store[self.path[len("/kv/"):]] = body
        self.answer(200, '{"stored": true}')

    def do_DELETE(self):
        with lock:
            self._do_DELETE()

    def _do_DELETE(self):
        key = self.path[len("/kv/"):]
        existed = store.pop(key, None) is not None
        self.answer(200 if existed else 404, json.dumps({"deleted": existed}))

    def log_message(self, *args):
        pass


# A thread per connection (a test may ask a replica directly while resh's connection is open);
# one request at a time (the lock).
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
