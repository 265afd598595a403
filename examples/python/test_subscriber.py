#!/usr/bin/env python3
"""End-to-end test of subscriber.py against the real sipgate-sidecar binary.

Starts `sipgate-sidecar serve --signature off` on free loopback ports with a
temporary database, posts webhooks the way sipgate does, and checks that the
subscriber prints them in order, resumes from its state file after a restart
with exactly the events it missed, and reconnects without a gap when the
server restarts.

    python3 examples/python/test_subscriber.py

The binary is $SIDECAR_BINARY, or target/debug/sipgate-sidecar (which
`cargo test` builds).
"""

import json
import os
import pathlib
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BINARY = os.environ.get("SIDECAR_BINARY", str(ROOT / "target" / "debug" / "sipgate-sidecar"))
TIMEOUT = 30.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lines:
    """The lines of a child's pipe, read by a thread, taken with a timeout."""

    def __init__(self, pipe, name):
        self.name = name
        self.queue = queue.Queue()
        self.seen = []
        self.pipe = pipe
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.pipe:
            self.queue.put(line.rstrip("\n"))

    def close(self):
        """After the child exited: the reader has met the end of the pipe."""
        self.thread.join(timeout=TIMEOUT)
        self.pipe.close()

    def next(self, timeout=TIMEOUT):
        try:
            line = self.queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line from {self.name} within {timeout}s; "
                                 f"so far: {self.seen[-10:]}") from None
        self.seen.append(line)
        return line

    def wait_for(self, prefix, timeout=TIMEOUT):
        while True:
            line = self.next(timeout)
            if line.startswith(prefix):
                return line

    def nothing_within(self, seconds):
        try:
            line = self.queue.get(timeout=seconds)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected line from {self.name}: {line}")


class Child:
    def __init__(self, argv, name):
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL, text=True)
        self.stdout = Lines(self.process.stdout, f"{name} stdout")
        self.stderr = Lines(self.process.stderr, f"{name} stderr")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stdout.close()
        self.stderr.close()


class SubscriberTest(unittest.TestCase):
    def setUp(self):
        if not os.access(BINARY, os.X_OK):
            self.fail(f"{BINARY} is not built (cargo build, or set SIDECAR_BINARY)")
        self.dir = tempfile.TemporaryDirectory(prefix="sidecar-py-")
        self.database = os.path.join(self.dir.name, "sidecar.db")
        self.state_file = os.path.join(self.dir.name, "seq.txt")
        self.http_port, self.grpc_port = free_port(), free_port()
        self.children = []
        self.server = self.start_server()

    def tearDown(self):
        for child in reversed(self.children):
            child.stop()
        self.dir.cleanup()

    def start_server(self):
        server = Child([BINARY, "serve", "--signature", "off",
                        "--http-addr", f"127.0.0.1:{self.http_port}",
                        "--grpc-addr", f"127.0.0.1:{self.grpc_port}",
                        "--metrics-addr", "off",
                        "--database", self.database], "server")
        self.children.append(server)
        server.stderr.wait_for("sipgate-sidecar listening")
        return server

    def start_subscriber(self, expect_after_seq):
        subscriber = Child([sys.executable, str(HERE / "subscriber.py"),
                            "--server", f"127.0.0.1:{self.grpc_port}",
                            "--state-file", self.state_file,
                            "--min-backoff", "0.5", "--max-backoff", "1"], "subscriber")
        self.children.append(subscriber)
        line = subscriber.stderr.wait_for("subscriber: subscribed")
        self.assertEqual(line, f"subscriber: subscribed after_seq={expect_after_seq}")
        return subscriber

    def post(self, fields):
        body = urllib.parse.urlencode(fields).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/api/v1/sipgate/in", data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            self.assertEqual(reply.status, 200)

    def call(self, call_id, *kinds):
        """Posts the events of one inbound call."""
        number = {"from": "492111234567", "to": "4930600000000", "direction": "in"}
        for kind in kinds:
            fields = {"event": kind, "callId": call_id, **number}
            if kind == "newCall":
                fields["user[]"] = "Alice"
            if kind == "hangup":
                fields["cause"] = "normalClearing"
            self.post(fields)

    def events(self, subscriber, count):
        """The next `count` events, as (seq, kind, call_id)."""
        out = []
        for _ in range(count):
            event = json.loads(subscriber.stdout.next())
            out.append((int(event["seq"]), event["kind"], event["call_id"]))
        return out

    def assert_saved_seq(self, seq):
        """The state file catches up with the printed line a moment later."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            path = pathlib.Path(self.state_file)
            saved = int(path.read_text()) if path.exists() else None
            if saved == seq or time.monotonic() > deadline:
                self.assertEqual(saved, seq)
                return
            time.sleep(0.02)

    def test_receives_in_order_and_resumes_with_exactly_the_missed_events(self):
        subscriber = self.start_subscriber(expect_after_seq=0)
        self.call("py-1", "newCall", "answer", "hangup")
        self.assertEqual(self.events(subscriber, 3), [
            (1, "EVENT_KIND_NEW_CALL", "py-1"),
            (2, "EVENT_KIND_ANSWER", "py-1"),
            (3, "EVENT_KIND_HANGUP", "py-1"),
        ])
        self.assert_saved_seq(3)
        subscriber.stop()

        # Missed while no subscriber ran.
        self.call("py-2", "newCall", "hangup")
        self.call("py-3", "newCall")

        subscriber = self.start_subscriber(expect_after_seq=3)
        self.assertEqual(self.events(subscriber, 3), [
            (4, "EVENT_KIND_NEW_CALL", "py-2"),
            (5, "EVENT_KIND_HANGUP", "py-2"),
            (6, "EVENT_KIND_NEW_CALL", "py-3"),
        ])
        subscriber.stdout.nothing_within(0.5)
        # And live again after the catch-up.
        self.call("py-3", "hangup")
        self.assertEqual(self.events(subscriber, 1), [(7, "EVENT_KIND_HANGUP", "py-3")])
        self.assert_saved_seq(7)

    def test_reconnects_after_a_server_restart_without_a_gap(self):
        subscriber = self.start_subscriber(expect_after_seq=0)
        self.call("py-4", "newCall")
        self.assertEqual(self.events(subscriber, 1), [(1, "EVENT_KIND_NEW_CALL", "py-4")])

        self.server.stop()
        subscriber.stderr.wait_for("subscriber: UNAVAILABLE")
        self.server = self.start_server()
        # Posted at once, most likely before the subscriber is back.
        self.call("py-4", "answer", "hangup")
        subscriber.stderr.wait_for("subscriber: subscribed after_seq=1")
        self.assertEqual(self.events(subscriber, 2), [
            (2, "EVENT_KIND_ANSWER", "py-4"),
            (3, "EVENT_KIND_HANGUP", "py-4"),
        ])
        subscriber.stdout.nothing_within(0.5)


if __name__ == "__main__":
    unittest.main(verbosity=2)
