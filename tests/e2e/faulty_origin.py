"""An origin that misbehaves on purpose, for serve's fault-injection tests.

    python3 faulty_origin.py PORT

The request path picks the behaviour (the owner segment of /acme/<mode>.git/...):
  ok        read the whole request body, answer 200 with "ok <bytes read>"
  hang      read the request head, then never answer
  stall     answer 200 announcing 1 MiB, send 4 KiB, then stall forever
  reset     answer 200 announcing 1 MiB, send 4 KiB, then reset the connection
  slow      answer 200 with 64 KiB sent as 16 chunks, 0.4 s apart (slow but moving)
Every connection is handled on its own thread; the process is stopped by its PID.
"""
import socket
import struct
import sys
import threading
import time


def read_head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def content_length(head):
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return int(value.strip())
    return 0


def answer(conn, head, rest):
    path = head.split(" ")[1]
    mode = path.split("/")[2].removesuffix(".git") if path.count("/") >= 2 else "ok"
    if mode == "hang":
        time.sleep(3600)
        return
    if mode == "ok":
        want = content_length(head)
        got = len(rest)
        while got < want:
            chunk = conn.recv(65536)
            if not chunk:
                return
            got += len(chunk)
        body = f"ok {got}\n".encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        return
    if mode in ("stall", "reset"):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n" + b"x" * 4096)
        if mode == "stall":
            time.sleep(3600)
        else:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        return
    if mode == "slow":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n")
        for _ in range(16):
            time.sleep(0.4)
            conn.sendall(b"y" * 4096)
        return


def serve(conn):
    with conn:
        try:
            while True:
                head, rest = read_head(conn)
                if head is None:
                    return
                answer(conn, head, rest)
        except OSError:
            pass


def main():
    port = int(sys.argv[1])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
