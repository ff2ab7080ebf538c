"""Real services for the relay tests: a redis-server and the pg_ab_relay binary, started and
stopped by the tests (they restart and kill them on purpose), plus small clients."""
import base64
import json
import os
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request

import jwt
import redis

SECRET = "relay-test-secret-0123456789abcdefghij"
RELAY_BIN = os.environ.get("PG_AB_RELAY_BIN", "target/relay/pg_ab_relay")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout=20.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class RedisServer:
    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="pg_ab_redis_")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._pings, 10, "redis-server")

    def _pings(self):
        try:
            return self.client().ping()
        except redis.exceptions.ConnectionError:
            return False

    def client(self):
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"


class Relay:
    def __init__(self, dbname, redis_url, **flags):
        self.port = free_port()
        host = os.environ.get("PGHOST", "/var/run/postgresql")
        port = os.environ.get("PGPORT", "5432")
        self.args = [
            RELAY_BIN,
            "--database-url", f"host={host} port={port} user=postgres dbname={dbname}",
            "--redis-url", redis_url,
            "--listen", f"127.0.0.1:{self.port}",
            "--token-secret", SECRET,
            "--ping-seconds", "1",
            "--max-backoff-seconds", "1",
        ]
        for k, v in flags.items():
            self.args += ["--" + k.replace("_", "-"), str(v)]
        self.proc = None
        self.log = tempfile.NamedTemporaryFile(prefix="pg_ab_relay_", suffix=".log", delete=False)

    def start(self, wait_healthy=True):
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT)
        if wait_healthy:
            wait_until(lambda: self.health()[0] == 200, 30, "relay /healthz 200")
        return self

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return None, ""

    def health(self):
        status, body = self.get("/healthz")
        return status, (json.loads(body) if body else None)

    def metric(self, name, labels=""):
        _, body = self.get("/metrics")
        for line in body.splitlines():
            if line.startswith(name + labels + " "):
                return float(line.split()[-1])
        return None

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            return self.proc.wait(15)
        return None

    @property
    def ws_url(self):
        return f"ws://127.0.0.1:{self.port}/ws"

    def logs(self):
        with open(self.log.name) as f:
            return f.read()


def token(test_ids, ttl=600, secret=SECRET):
    return jwt.encode({"test_ids": test_ids, "exp": int(time.time()) + ttl}, secret, algorithm="HS256")


class Collector:
    """A Redis subscriber on a thread, keeping every message in arrival order."""

    def __init__(self, server, *channels):
        self.messages = []
        self.pubsub = server.client().pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(*channels)
        self.stop_flag = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_flag:
            try:
                m = self.pubsub.get_message(timeout=0.2)
            except (redis.exceptions.ConnectionError, ValueError):
                return
            if m and m["type"] == "message":
                self.messages.append((m["channel"], json.loads(m["data"])))

    def ids(self, channel=None):
        return [m["event_id"] for ch, m in list(self.messages) if channel is None or ch == channel]

    def close(self):
        self.stop_flag = True
        self.thread.join(5)
        try:
            self.pubsub.close()
        except Exception:
            pass


class StalledClient:
    """A WebSocket client that subscribes and then never reads: a raw socket, so nothing
    drains the relay's messages behind our back."""

    def __init__(self, port, token_, test_ids, **subscribe):
        self.sock = socket.create_connection(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token_}\r\n\r\n"
        ).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0], head
        self._send_text(json.dumps({"action": "subscribe", "test_ids": test_ids, **subscribe}))

    def _send_text(self, text):
        data = text.encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        if len(data) < 126:
            header += bytes([0x80 | len(data)])
        else:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(data))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def closed_by_peer(self):
        """Drains what was buffered; True once the relay has closed the connection."""
        self.sock.settimeout(5)
        try:
            while True:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    return True
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def close_code(self, timeout=10):
        """Reads frames until the relay's close frame; returns its code (None if none came)."""
        self.sock.settimeout(timeout)
        data = b""
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        i = 0
        while i + 2 <= len(data):
            opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
            i += 2
            if length == 126:
                length, i = struct.unpack(">H", data[i:i + 2])[0], i + 2
            elif length == 127:
                length, i = struct.unpack(">Q", data[i:i + 8])[0], i + 8
            if opcode == 0x8:
                return struct.unpack(">H", data[i:i + 2])[0]
            i += length
        return None

    def close(self):
        self.sock.close()


class ResumingClient:
    """A WebSocket client on a thread that subscribes to every test, stays a random moment,
    disconnects and resumes with the resume_token of the last message it took, again and again
    (also across relay restarts and replay failures), as the README tells clients to. It keeps
    every event it receives in arrival order. hold() makes it stay connected."""

    def __init__(self, relay, seed, use_since=False):
        import random

        self.use_since = use_since  # the older, unsafe protocol: resume after the last event id
        self.late_commits_seen = 0  # tokens with holes: ids passed before they committed
        self.relay = relay
        self.rng = random.Random(seed)
        self.token = None
        self.received = []  # (event_id, test_id, seq) in arrival order
        self.connections = 0
        self.closes = []  # close codes the relay sent
        self.holding = False
        self.stop_flag = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _take(self, m):
        if "event_id" in m:
            data = m.get("data") or {}
            self.received.append((m["event_id"], m.get("test_id"), data.get("seq")))
        if "resume_token" in m and (m.get("type") != "subscribed" or self.token is None):
            self.token = m["resume_token"]
            self.late_commits_seen += "/" in self.token

    def _run(self):
        from websockets.exceptions import ConnectionClosed, InvalidHandshake
        from websockets.sync.client import connect

        while not self.stop_flag:
            try:
                with connect(self.relay.ws_url, additional_headers={"Authorization": f"Bearer {token(['*'])}"},
                             open_timeout=2) as ws:
                    self.connections += 1
                    message = {"action": "subscribe", "all": True}
                    if self.use_since and self.received:
                        message["since"] = self.received[-1][0]
                    elif self.token is not None and not self.use_since:
                        message["resume_token"] = self.token
                    ws.send(json.dumps(message))
                    stay = time.time() + self.rng.uniform(0.02, 0.5)
                    while not self.stop_flag and (self.holding or time.time() < stay):
                        try:
                            self._take(json.loads(ws.recv(timeout=0.05)))
                        except TimeoutError:
                            pass
            except ConnectionClosed as e:
                if e.rcvd is not None:
                    self.closes.append(e.rcvd.code)
            except (OSError, InvalidHandshake, EOFError):
                # The relay is down, or was killed during the handshake (no HTTP response):
                # try again. Anything else ends the client and fails its test.
                pass
            time.sleep(self.rng.uniform(0, 0.05))

    def ready(self):
        return self.token is not None

    def hold(self):
        self.holding = True

    def close(self):
        self.stop_flag = True
        self.thread.join(10)


class PingCounter(StalledClient):
    """A raw WebSocket client that answers the relay's pings and counts them: the relay's own
    clock, for tests that must let ping intervals pass without sleeping a guessed time."""

    def __init__(self, port, token_, test_ids):
        super().__init__(port, token_, test_ids)
        self.pings = 0
        self.sock.settimeout(None)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _recv_exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def _run(self):
        try:
            while True:
                head = self._recv_exact(2)
                opcode, length = head[0] & 0x0F, head[1] & 0x7F
                if length == 126:
                    length = struct.unpack(">H", self._recv_exact(2))[0]
                elif length == 127:
                    length = struct.unpack(">Q", self._recv_exact(8))[0]
                payload = self._recv_exact(length)
                if opcode == 0x9:
                    mask = os.urandom(4)
                    self.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + mask
                                      + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
                    self.pings += 1
                elif opcode == 0x8:
                    return
        except (OSError, ConnectionError):
            return


def emit(conn, test_id, n=1):
    """n events of test_id through the raw outbox insert (the API's events go the same way)."""
    ids = []
    for _ in range(n):
        ids.append(conn.execute("INSERT INTO ab.events (test_id, type, payload) VALUES (%s, 'burst', "
                                "jsonb_build_object('test_id', %s::text, 'update_type', 'burst')) RETURNING id",
                                (test_id, test_id)).fetchone()[0])
    return ids


def latencies(conn, live, n, test_id="t2"):
    """Seconds from an event's commit to its arrival at the WebSocket client `live`, n times."""
    out = []
    for _ in range(n):
        started = time.time()
        event = emit(conn, test_id)[0]
        while json.loads(live.recv(timeout=10)).get("event_id") != event:
            pass
        out.append(time.time() - started)
    return out


def p99(values):
    return sorted(values)[max(0, int(len(values) * 0.99) - 1)]
