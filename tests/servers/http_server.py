#!/usr/bin/env python3
"""A small test HTTP file server on 127.0.0.1, started and stopped by tests/transfer.rs
(Python's http.server does neither Range nor PUT).

GET with Range (bytes=N- or bytes=N-M), If-Range, ETag and Last-Modified; PUT (stored to a temporary
name, renamed when the body is whole); Basic auth for one user whose password is read from
--password-file. Prints "PORT <n>" once it listens and appends one line per request to
--events (GET <path> range=<Range> if-range=<If-Range> / SENT <path> <body bytes> /
PUT <path> <bytes> / DENIED <path>).

--cut-after N: the first GET (or the one --cut-request K names, counted from 1) announces
its whole length, sends N bytes of body and drops the connection.  --change-on-cut: then rewrites the file (same size, other bytes, newer
mtime).  --ignore-range: always answer 200 with the whole file.
--trickle-after N: the first GET sends N bytes of body, then 64 bytes every half second (a
server that stalls without ever going silent).
--tls-cert FILE --tls-key FILE: HTTPS.
A GET of a directory answers an index page linking each file (as nginx autoindex does); a
PUT creates the directories above its file (as nginx's create_full_put_path does).
"""

import argparse
import base64
import email.utils
import os
import socket
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--events", required=True)
    parser.add_argument("--cut-after", type=int, default=None)
    parser.add_argument("--cut-request", type=int, default=1)
    parser.add_argument("--change-on-cut", action="store_true")
    parser.add_argument("--ignore-range", action="store_true")
    parser.add_argument("--trickle-after", type=int, default=None)
    parser.add_argument("--tls-cert", default=None)
    parser.add_argument("--tls-key", default=None)
    args = parser.parse_args()

    with open(args.password_file) as f:
        password = f.readline().rstrip("\n")
    expected = "Basic " + base64.b64encode(f"{args.user}:{password}".encode()).decode()
    events = open(args.events, "a", buffering=1)
    state = {
        "cut_pending": args.cut_after is not None,
        "trickle_pending": args.trickle_after is not None,
        "gets": 0,
    }

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *a):
            pass

        def path_on_disk(self):
            return os.path.join(args.root, self.path.lstrip("/"))

        def allowed(self):
            if self.headers.get("Authorization") == expected:
                return True
            events.write(f"DENIED {self.path}\n")
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="store"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False

        def do_GET(self):
            if not self.allowed():
                return
            path = self.path_on_disk()
            range_, if_range = self.headers.get("Range"), self.headers.get("If-Range")
            events.write(f"GET {self.path} range={range_ or '-'} if-range={if_range or '-'}\n")
            if os.path.isdir(path):
                names = sorted(n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n)))
                page = "".join(f'<a href="{n}">{n}</a>\n' for n in names).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                return
            if not os.path.isfile(path):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            stat = os.stat(path)
            size = stat.st_size
            etag = f'"{stat.st_mtime_ns:x}-{size:x}"'
            modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
            start, end = 0, size
            if range_ and not args.ignore_range and if_range in (None, etag, modified):
                first, last = range_.removeprefix("bytes=").split("-")
                start = int(first)
                end = min(size, int(last) + 1) if last else size
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(end - start))
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
            self.end_headers()
            with open(path, "rb") as f:
                f.seek(start)
                body = f.read(end - start)
            state["gets"] += 1
            if state["cut_pending"] and state["gets"] == args.cut_request:
                state["cut_pending"] = False
                self.wfile.write(body[: args.cut_after])
                self.wfile.flush()
                events.write(f"CUT {args.cut_after}\n")
                if args.change_on_cut:
                    with open(path, "wb") as f:
                        f.write(bytes([0xC5]) * size)
                    os.utime(path, (stat.st_atime, stat.st_mtime + 3600))
                    events.write("CHANGED\n")
                events.write(f"SENT {self.path} {min(len(body), args.cut_after)}\n")
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if state["trickle_pending"]:
                state["trickle_pending"] = False
                sent = args.trickle_after
                try:
                    self.wfile.write(body[:sent])
                    while sent < len(body):
                        time.sleep(0.5)
                        self.wfile.write(body[sent : sent + 64])
                        self.wfile.flush()
                        sent += 64
                except OSError:
                    pass  # the client gave up
                events.write(f"TRICKLED {self.path} {min(sent, len(body))}\n")
                self.close_connection = True
                return
            self.wfile.write(body)
            events.write(f"SENT {self.path} {len(body)}\n")

        def do_PUT(self):
            if not self.allowed():
                return
            length = int(self.headers["Content-Length"])
            body = self.rfile.read(length)
            events.write(f"PUT {self.path} {len(body)}\n")
            path = self.path_on_disk()
            if len(body) != length:
                self.close_connection = True
                return
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "wb") as f:
                f.write(body)
            os.replace(path + ".tmp", path)
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        # The handshake runs in the request's thread, not in accept(): a client that
        # refuses the certificate then costs nothing but its own connection.
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
