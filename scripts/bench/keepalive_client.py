#!/usr/bin/env python3
"""Sends N POST /v1/completions on 8 keep-alive connections, 8 at a time, and insists on 200s.

Used by the callgrind scripts (instructions_per_request.sh, flow_instructions.sh): a fixed request
mix whose per-request instruction count is comparable between runs.

  keepalive_client.py PORT N [MODEL]     (MODEL default "m")
"""
import socket
import sys

port, n = int(sys.argv[1]), int(sys.argv[2])
model = sys.argv[3] if len(sys.argv) > 3 else "m"
body = b'{"model":"%s","prompt":"The quick brown fox jumps over the lazy dog","max_tokens":5}' % model.encode()
req = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
       b"Content-Length: %d\r\n\r\n" % (port, len(body))) + body
socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(8)]
for s in socks:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
done = 0
while done < n:
    for s in socks:
        s.sendall(req)
    for s in socks:
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("connection closed")
            buf += chunk
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                continue
            head = buf[:end].split(b"\r\n")
            if b" 200 " not in head[0] + b" ":
                sys.exit("unexpected status: %r" % head[0])
            length = int([l.split(b":")[1] for l in head if l.lower().startswith(b"content-length")][0])
            if len(buf) >= end + 4 + length:
                break
        done += 1
