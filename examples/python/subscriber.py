#!/usr/bin/env python3
"""Follow sipgate-sidecar's event stream and print every event as a JSON line.

A client written only from proto/sidecar/v1/sidecar.proto: the Python stubs
are generated at start with grpcio-tools into a temporary directory, so
nothing generated is kept in the repository.

It remembers the sequence number of the last event it printed (in memory, and
in --state-file if given) and, after the stream ends or the connection drops,
subscribes again with after_seq = that number: no event is missed and none is
printed twice while the process runs. With --state-file the same holds across
restarts, except for the one event printed just before a crash and not yet
recorded, which is printed again (at-least-once: deduplicate by seq).

    python3 subscriber.py --server 127.0.0.1:50051 --state-file seq.txt

Output: one CallEvent per line in protobuf's JSON mapping, field names as in
the proto (`seq`, `call_id`, ...); 64-bit integers such as `seq` and
`received_at_ms` are JSON strings, enums are their names
("EVENT_KIND_NEW_CALL"). Status messages go to stderr.
"""

import argparse
import importlib
import json
import os
import pathlib
import signal
import sys
import tempfile
import time

import grpc
from google.protobuf import json_format
from grpc_tools import protoc

PROTO_ROOT = pathlib.Path(__file__).resolve().parents[2] / "proto"

# Codes that will not change by trying again: report and stop.
FATAL = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNIMPLEMENTED,
}


def load_stubs(proto_root=PROTO_ROOT):
    """Compiles the proto files and imports the generated modules."""
    out = tempfile.mkdtemp(prefix="sidecar-stubs-")
    protos = sorted(str(p) for p in (proto_root / "sidecar" / "v1").glob("*.proto"))
    # grpc_tools ships the well-known types (google/protobuf/*.proto).
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{proto_root}", f"-I{well_known}",
            f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    if protoc.main(args) != 0:
        raise SystemExit(f"could not compile {', '.join(protos)}")
    sys.path.insert(0, out)
    pb2 = importlib.import_module("sidecar.v1.sidecar_pb2")
    pb2_grpc = importlib.import_module("sidecar.v1.sidecar_pb2_grpc")
    return pb2, pb2_grpc


def log(message):
    print(f"subscriber: {message}", file=sys.stderr, flush=True)


class SeqState:
    """The last printed seq, written atomically to a file if one is given."""

    def __init__(self, path):
        self.path = pathlib.Path(path) if path else None
        self.seq = None
        if self.path and self.path.exists():
            text = self.path.read_text().strip()
            self.seq = int(text) if text else None

    def save(self, seq):
        self.seq = seq
        if self.path:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(f"{seq}\n")
            os.replace(tmp, self.path)


def target(server):
    """Accepts host:port as well as http://host:port (the CLI's form)."""
    for scheme in ("http://", "https://"):
        if server.startswith(scheme):
            return server[len(scheme):].rstrip("/")
    return server


def run(args):
    pb2, pb2_grpc = load_stubs()
    state = SeqState(args.state_file)
    if state.seq is None and args.after_seq is not None:
        state.seq = args.after_seq
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    delay = args.min_backoff
    while True:
        channel = grpc.insecure_channel(target(args.server))
        try:
            stub = pb2_grpc.CallEventsStub(channel)
            if state.seq is None:
                # "From now on", but as a number, so that a reconnect before
                # the first event still resumes without a gap.
                head = stub.ListEvents(pb2.ListEventsRequest(limit=1),
                                       metadata=metadata, timeout=10)
                state.seq = head.head_seq
            call = stub.Subscribe(pb2.SubscribeRequest(after_seq=state.seq),
                                  metadata=metadata)
            call.initial_metadata()  # the server has taken the subscription
            if call.done() and call.code() is not grpc.StatusCode.OK:
                raise call  # refused or unreachable: the call is the error
            log(f"subscribed after_seq={state.seq}")
            delay = args.min_backoff
            for event in call:
                line = json_format.MessageToDict(event, preserving_proto_field_name=True)
                sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
                sys.stdout.flush()
                state.save(event.seq)
            log("stream ended by the server")
        except grpc.RpcError as e:
            if e.code() in FATAL:
                log(f"{e.code().name}: {e.details()}")
                return 1
            log(f"{e.code().name}: {e.details()}; reconnecting in {delay:.1f}s "
                f"with after_seq={state.seq}")
        finally:
            channel.close()
        time.sleep(delay)
        delay = min(delay * 2, args.max_backoff)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=os.environ.get("SIDECAR_SERVER", "127.0.0.1:50051"),
                        help="gRPC address, host:port (env SIDECAR_SERVER)")
    parser.add_argument("--token", default=os.environ.get("SIDECAR_GRPC_TOKEN"),
                        help="bearer token, if the server requires one (env SIDECAR_GRPC_TOKEN)")
    parser.add_argument("--state-file",
                        help="file that keeps the last printed seq across restarts")
    parser.add_argument("--after-seq", type=int,
                        help="start after this seq when there is no state yet "
                             "(0: every stored event; default: from now on)")
    parser.add_argument("--min-backoff", type=float, default=0.2,
                        help="first wait before reconnecting, seconds")
    parser.add_argument("--max-backoff", type=float, default=10.0,
                        help="longest wait before reconnecting, seconds")
    args = parser.parse_args(argv)
    # SIGTERM ends the process like Ctrl-C; the state file is always consistent.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        return run(args)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
