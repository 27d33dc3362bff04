#!/usr/bin/env python3
"""Relays one guest connection to 127.0.0.1:PORT; QEMU runs it per connection.

QEMU's `guestfwd=tcp:ADDR:PORT-cmd:...` hands each guest TCP connection to a new process
as its stdin/stdout (and stderr: one socket). This copies both ways, passes each side's
end of data on as a half-close (an FTP data connection ends that way), and exits when
both sides are done. It writes nothing else: anything on stderr would reach the guest.
"""

import os
import socket
import sys
import threading


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def main():
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    guest = socket.socket(fileno=0)
    try:
        server = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
    except OSError:
        return 1
    server.settimeout(None)
    back = threading.Thread(target=pump, args=(server, guest), daemon=True)
    back.start()
    pump(guest, server)
    back.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
