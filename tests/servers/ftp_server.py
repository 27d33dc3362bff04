#!/usr/bin/env python3
"""A test FTP server (pyftpdlib) on 127.0.0.1, started and stopped by tests/transfer.rs.

Serves --root for one user whose password is read from --password-file (so it is in no
process's arguments), prints "PORT <n>" on stdout once it listens, and appends one line
per interesting command to --events (LOGIN <user>, REST <offset>, RETR <path>, STOR <path>, RNTO <path>)
for the test to check what the client asked for.

--cut-after N: the first RETR sends only N bytes, then the server drops the control
connection without a reply, as a cut cable would.
--change-on-cut: at that cut, rewrite the file (same size, other bytes, newer mtime).
--change-after-send: the first RETR sends the whole file, which is then rewritten before
the transfer's reply (as a file replaced on the server while it was being sent).
--passive-ports FIRST-LAST: data connections listen only on these ports (QEMU guests reach
only forwarded ports); without it, on any port the kernel picks.
--throttle BPS: every data connection sends at most BPS bytes a second.
--tls-cert FILE --tls-key FILE: FTPS (explicit, AUTH TLS), and the server requires TLS on
the control connection before the login and on every data connection (PROT P).
"""

import argparse
import os
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler, ThrottledDTPHandler
from pyftpdlib.servers import FTPServer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--events", required=True)
    parser.add_argument("--cut-after", type=int, default=None)
    parser.add_argument("--change-on-cut", action="store_true")
    parser.add_argument("--change-after-send", action="store_true")
    parser.add_argument("--passive-ports", default=None)
    parser.add_argument("--throttle", type=int, default=None)
    parser.add_argument("--tls-cert", default=None)
    parser.add_argument("--tls-key", default=None)
    args = parser.parse_args()

    with open(args.password_file) as f:
        password = f.readline().rstrip("\n")
    events = open(args.events, "a", buffering=1)
    state = {"cut_pending": args.cut_after is not None, "change_pending": args.change_after_send}

    def rewrite(path):
        """Same size, other bytes, an mtime an hour later (MDTM has whole seconds)."""
        size = os.path.getsize(path)
        with open(path, "wb") as f:
            f.write(bytes([0xC5]) * size)
        stat = os.stat(path)
        os.utime(path, (stat.st_atime, stat.st_mtime + 3600))
        events.write("CHANGED\n")

    class Limited:
        """A file that ends after `limit` bytes."""

        def __init__(self, inner, limit):
            self.inner, self.left = inner, limit

        def read(self, n):
            data = self.inner.read(min(n, self.left))
            self.left -= len(data)
            return data

        def __getattr__(self, name):
            return getattr(self.inner, name)

    base = TLS_FTPHandler if args.tls_cert else FTPHandler

    class Handler(base):
        def on_login(self, username):
            events.write(f"LOGIN {username}\n")

        def ftp_REST(self, line):
            events.write(f"REST {line}\n")
            return super().ftp_REST(line)

        def ftp_STOR(self, file, mode="w"):
            events.write(f"STOR {self.fs.fs2ftp(file)}\n")
            return super().ftp_STOR(file, mode)

        def ftp_RNTO(self, path):
            events.write(f"RNTO {self.fs.fs2ftp(path)}\n")
            return super().ftp_RNTO(path)

        def push_dtp_data(self, data, isproducer=False, file=None, cmd=None):
            if cmd == "RETR":
                events.write(f"RETR {self.fs.fs2ftp(file.name)}\n")
                if state["cut_pending"]:
                    state["cut_pending"] = False
                    self.cutting = file.name
                    data.file = Limited(data.file, args.cut_after)
                elif state["change_pending"]:
                    state["change_pending"] = False
                    self.changing = file.name
            return super().push_dtp_data(data, isproducer, file, cmd)

        def respond(self, resp, logfun=None):
            changing = getattr(self, "changing", None)
            if changing is not None and resp.startswith("226"):
                self.changing = None
                rewrite(changing)
            path = getattr(self, "cutting", None)
            if path is not None and resp.startswith("226"):
                self.cutting = None
                events.write(f"CUT {args.cut_after}\n")
                if args.change_on_cut:
                    rewrite(path)
                self.close()
                return
            return super().respond(resp) if logfun is None else super().respond(resp, logfun)

    authorizer = DummyAuthorizer()
    authorizer.add_user(args.user, password, args.root, perm="elradfmwMT")
    Handler.authorizer = authorizer
    if args.tls_cert:
        Handler.certfile, Handler.keyfile = args.tls_cert, args.tls_key
        Handler.tls_control_required = Handler.tls_data_required = True
    Handler.use_sendfile = False  # the cut wraps the file object; sendfile would bypass it
    if args.throttle is not None:
        class Throttled(ThrottledDTPHandler):
            write_limit = args.throttle

        Handler.dtp_handler = Throttled
    if args.passive_ports is not None:
        first, last = (int(port) for port in args.passive_ports.split("-"))
        Handler.passive_ports = range(first, last + 1)
    server = FTPServer(("127.0.0.1", 0), Handler)
    print(f"PORT {server.socket.getsockname()[1]}", flush=True)
    server.serve_forever(handle_exit=True)


if __name__ == "__main__":
    sys.exit(main())
