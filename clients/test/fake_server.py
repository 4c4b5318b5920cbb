"""A scripted HTTP server for clients/test/run.sh (test-only; the client needs no Python).

Answers each POST with the next step of a script (a JSON list; the last step repeats):
  {"status": 503, "headers": {"Retry-After": "1"}, "body": "..."}   a canned answer
  {"proxy": true}                                                    relay to --upstream
  {"status": 200, "body": "...", "no_length": true}   no Content-Length: the body ends at close
Every request is appended to --log as one JSON line (path, headers, body), and the port it
listens on is written to --port-file once it is ready.
"""

import argparse
import json
import os
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--script", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--upstream", default="")
    args = parser.parse_args()

    with open(args.script, encoding="utf-8") as f:
        steps = json.load(f)
    lock = threading.Lock()
    state = {"n": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):  # quiet
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with lock:
                step = steps[min(state["n"], len(steps) - 1)]
                state["n"] += 1
                with open(args.log, "a", encoding="utf-8") as log:
                    log.write(
                        json.dumps(
                            {
                                "path": self.path,
                                "headers": {k.lower(): v for k, v in self.headers.items()},
                                "body": body.decode("latin-1"),
                            }
                        )
                        + "\n"
                    )
            if step.get("proxy"):
                request = urllib.request.Request(
                    args.upstream + self.path,
                    data=body,
                    method="POST",
                    headers={
                        "Content-Type": self.headers.get("Content-Type", ""),
                        "User-Agent": self.headers.get("User-Agent", ""),
                    },
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        status, headers, data = response.status, response.headers, response.read()
                except urllib.error.HTTPError as err:
                    status, headers, data = err.code, err.headers, err.read()
                self.send_response(status)
                for name in ("Content-Type", "X-Request-Id", "Retry-After", "Cache-Control"):
                    if headers.get(name) is not None:
                        self.send_header(name, headers[name])
            else:
                data = step.get("body", "").encode("utf-8")
                self.send_response(step["status"])
                self.send_header("Content-Type", step.get("content_type", "application/json"))
                for name, value in step.get("headers", {}).items():
                    self.send_header(name, value)
            if step.get("no_length"):
                self.send_header("Connection", "close")
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(args.port_file + ".tmp", "w", encoding="utf-8") as f:
        f.write(str(server.server_address[1]))
    os.replace(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
