#!/usr/bin/env python3
"""web.py: a small static web server for resh's stream-mode example (stdlib only).

python3's http.server, without what makes identical servers answer differently byte for byte:
the Date header (it changes every second, so two replicas answering across a second boundary
would disagree) and the Python version in the Server header. With those gone, N copies serving
the same directory answer identically and resh's stream vote compares whole HTTP answers.
(Voting on HTTP answers while ignoring such headers is what an HTTP-aware mode is for; this
server just avoids them.)

Usage: python3 web.py --port PORT --dir DIRECTORY
"""
import argparse
import functools
import http.server


class Handler(http.server.SimpleHTTPRequestHandler):
    server_version = "resh-example-web/1"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def send_header(self, keyword, value):
        if keyword.lower() == "date":
            return
        super().send_header(keyword, value)

    def log_message(self, format, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", default=".")
    args = parser.parse_args()
    handler = functools.partial(Handler, directory=args.dir)
    with http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
