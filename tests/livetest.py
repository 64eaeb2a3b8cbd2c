"""Helpers the live tests share (observability_check.py, top_check.py, status_page_check.py): ports
the OS picks, never handed out twice, an HTTP call, and a bounded wait.
"""
import socket
import time
import urllib.request

_taken = set()  # ports handed out already: chosen before the processes bind them


def free_port(consecutive=1):
    """A free loopback port (and the `consecutive - 1` after it), not handed out before."""
    for _ in range(50):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        ok = not any(port + i in _taken for i in range(consecutive))
        for i in range(1, consecutive):
            t = socket.socket()
            try:
                t.bind(("127.0.0.1", port + i))
            except OSError:
                ok = False
            t.close()
        if ok and port + consecutive < 65535:
            _taken.update(port + i for i in range(consecutive))
            return port
    raise RuntimeError("no free ports")


def get(url, body=None, headers=None, timeout=10):
    """(status, text) of a GET, or of a POST of `body` (JSON unless `headers` say otherwise)."""
    if headers is None:
        headers = {"Content-Type": "application/json"} if body else {}
    req = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read().decode()


def wait_for(pred, seconds, poll=0.1):
    """True once pred() holds (exceptions count as not yet), False after `seconds`."""
    end = time.time() + seconds
    while time.time() < end:
        try:
            if pred():
                return True
        except Exception:
            pass
        time.sleep(poll)
    return False
