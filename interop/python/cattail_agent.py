#!/usr/bin/env python3
"""A cattail agent on Python's grpcio, written from docs/PROTOCOL.md alone.

It is the third stack of the interop matrix (cattail-client on tonic, grpc-go in
testenv/cmd/grpcagent, this one), run by server/tests/grpc_interop.rs against both of the
server's transports. Its code for cattail.v1 is generated at start from proto/cattail/v1 with
grpcio-tools, into a fresh temporary folder.

It asks grpc.health.v1.Health/Check about "cattail.v1.Sync", opens cattail.v1.Sync/Watch,
sends a Hello, applies frames as sections 4 and 5 say until Synced, acks, closes its side and,
with -wait-deltas N, reads on until N delta frames arrived. With -state FILE it resumes from
the state an earlier run left there (epoch, complete revision, objects, digests by section 7)
and saves its own state at the end, so a test can see deltas and digest resumes. It prints one
JSON line of what it saw (the same fields as grpcagent's) and exits 0; on a gRPC status, a
protocol violation or a timeout it prints the reason on stderr and exits 1 (2 for bad flags).

Requirements: interop/python/requirements.txt.
"""

import argparse
import base64
import json
import os
import queue
import sys
import tempfile
import time

import grpc
import xxhash
import zstandard
from grpc_health.v1 import health_pb2, health_pb2_grpc

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")
# Above the server's 16 MiB default, as PROTOCOL.md section 2 asks (grpcio's default is 4 MiB).
MAX_MESSAGE_BYTES = 64 << 20
RESUME_MODES = {0: "RESUME_MODE_UNSPECIFIED", 1: "RESUME_MODE_SNAPSHOT",
                2: "RESUME_MODE_DELTAS", 3: "RESUME_MODE_DIGEST"}
ENCODING_PROTO, ENCODING_PROTO_ZSTD = 1, 2


class AgentError(Exception):
    """What went wrong, in one line for stderr."""


def generated_modules():
    """Generates cattail.v1's Python code into a fresh folder and imports it."""
    out = tempfile.mkdtemp(prefix="cattail-agent-py-")
    from grpc_tools import protoc  # imported late: only this needs grpcio-tools
    import importlib.resources
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    code = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{well_known}",
                        f"--python_out={out}", f"--grpc_python_out={out}",
                        os.path.join(PROTO_DIR, "cattail", "v1", "sync.proto")])
    if code != 0:
        raise AgentError(f"grpc_tools.protoc failed ({code}) on {PROTO_DIR}/cattail/v1/sync.proto")
    sys.path.insert(0, out)
    from cattail.v1 import sync_pb2, sync_pb2_grpc
    return sync_pb2, sync_pb2_grpc


def fnv1a(parts):
    """FNV-1a 64 over the parts, as grpcagent and the test compute content hashes."""
    h = 0xCBF29CE484222325
    for part in parts:
        for byte in part:
            h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def content_hash(objects):
    """The XOR over objects of FNV-1a 64 of namespace, 0, name, 0, value."""
    total = 0
    for (namespace, name), value in objects.items():
        total ^= fnv1a([namespace.encode(), b"\0", name.encode(), b"\0", value])
    return f"{total:016x}"


def key_hash(namespace, name):
    """PROTOCOL.md section 7.1."""
    return xxhash.xxh3_64_intdigest(namespace.encode() + b"\0" + name.encode())


def digest(objects, buckets):
    """The digest of one (resource, scope), recomputed from the store (section 7.1)."""
    out = [0] * buckets
    for (namespace, name), value in objects.items():
        entry = xxhash.xxh3_64_intdigest(
            namespace.encode() + b"\0" + name.encode() + b"\0" + value)
        out[key_hash(namespace, name) & (buckets - 1)] ^= entry
    return out


class Agent:
    """The state of one Watch stream: the store, the open resync and the report."""

    def __init__(self, args, pb, saved):
        self.args, self.pb = args, pb
        self.scope = args.node if args.node_scoped else ""
        self.saved = saved
        # resource -> {(namespace, name): value}; a resume starts from the saved objects.
        self.store = {r: {} for r in args.resources}
        if saved:
            for r in args.resources:
                for namespace, name, value in saved["resources"].get(r, {}).get("objects", []):
                    self.store[r][(namespace, name)] = base64.b64decode(value)
        self.infos = {}
        self.welcome = None
        self.synced = False
        self.revision = saved["revision"] if saved else 0
        self.resync = None  # resource -> {"whole": bool, "buckets": set, "upserted": set}
        self.resync_revision = 0
        self.report = {
            "health": "", "server_id": "", "epoch": "", "head_revision": 0, "resume_mode": "",
            "max_message_bytes": 0, "heartbeat_interval_ms": 0, "synced_revision": 0,
            "acked_revision": 0, "revision": 0, "messages": 0, "bytes": 0, "largest_message": 0,
            "frames": 0, "replace_frames": 0, "delta_frames": 0, "heartbeats": 0,
            "replaced_buckets": 0,
            "resources": {r: {"catchup_upserts": 0, "catchup_deletes": 0, "synced_objects": 0,
                              "synced_hash": "", "live_upserts": 0, "live_deletes": 0,
                              "objects": 0, "hash": ""} for r in args.resources},
        }

    def hello(self):
        pb, args = self.pb, self.args
        hello = pb.Hello(protocol_version=args.protocol_version, agent_id=args.agent_id,
                         node_name=args.node, agent_version=f"cattail_agent.py (grpcio {grpc.__version__})",
                         subscriptions=[pb.Subscription(resource=r, node_scoped=args.node_scoped)
                                        for r in args.resources])
        if args.zstd:
            hello.accepted_encodings.extend([ENCODING_PROTO_ZSTD, ENCODING_PROTO])
        if self.saved:
            resume = pb.Resume(epoch=bytes.fromhex(self.saved["epoch"]), revision=self.revision)
            for r in args.resources:
                kept = self.saved["resources"].get(r)
                if not kept:
                    continue
                buckets = kept["digest_buckets"]
                resume.digests.append(pb.ResourceDigest(
                    resource=r, scope=self.scope, fingerprint=kept["fingerprint"],
                    bucket_count=buckets, buckets=digest(self.store[r], buckets)))
            hello.resume.CopyFrom(resume)
        if args.pad_agent_id:
            hello.agent_id += "x" * args.pad_agent_id
        return hello

    def apply(self, message, size):
        """One ServerMessage, in the order of section 3: welcome, frames, synced, heartbeat."""
        report = self.report
        report["messages"] += 1
        report["bytes"] += size
        report["largest_message"] = max(report["largest_message"], size)
        if message.HasField("welcome"):
            self.on_welcome(message.welcome)
        elif self.welcome is None:
            raise AgentError("the first ServerMessage has no Welcome")
        last_delta = 0
        for i, frame in enumerate(message.frames):
            try:
                delta = self.on_frame(frame, last_delta)
            except AgentError as e:
                raise AgentError(f"frame {i} of message {report['messages']} "
                                 f"({frame.resource}, revision {frame.revision}): {e}") from None
            last_delta = delta or last_delta
        if last_delta:
            # A message holds whole revisions: the last delta's revision is complete (4.4).
            self.revision = last_delta
        if message.HasField("synced"):
            self.on_synced(message.synced.revision)
        if message.HasField("heartbeat"):
            if self.resync is not None:
                raise AgentError("a Heartbeat inside a resync")
            report["heartbeats"] += 1
            self.revision = max(self.revision, message.heartbeat.head_revision)
        report["revision"] = self.revision

    def on_welcome(self, welcome):
        if self.welcome is not None:
            raise AgentError(f"a second Welcome, in message {self.report['messages']}")
        self.welcome = welcome
        if welcome.protocol_version != 1:
            raise AgentError(f"Welcome.protocol_version is {welcome.protocol_version}, want 1")
        if len(welcome.epoch) != 16:
            raise AgentError(f"Welcome.epoch has {len(welcome.epoch)} bytes, want 16")
        self.infos = {info.resource: info for info in welcome.resources}
        for r in self.args.resources:
            if r not in self.infos:
                raise AgentError(f"Welcome.resources does not list {r}")
            if self.args.node_scoped and not self.infos[r].scope_field:
                raise AgentError(f"{r} is node scoped here but has no scope field in the Welcome")
        mode = RESUME_MODES.get(welcome.resume_mode, str(welcome.resume_mode))
        if not self.saved and mode != "RESUME_MODE_SNAPSHOT":
            raise AgentError(f"resume mode {mode} for a Hello without Resume")
        if mode != "RESUME_MODE_DELTAS":
            # The saved revision belongs to another epoch, or is too old: the catch-up is a
            # resync, and the complete revision is its Synced's.
            self.revision = 0
        self.report.update(server_id=welcome.server_id, epoch=welcome.epoch.hex(),
                           head_revision=welcome.head_revision, resume_mode=mode,
                           max_message_bytes=welcome.limits.max_message_bytes,
                           heartbeat_interval_ms=welcome.limits.heartbeat_interval_ms)

    def payload(self, frame):
        """The frame's FramePayload, decoded with the bounds of section 5.2."""
        data = frame.payload
        if frame.uncompressed_length > MAX_MESSAGE_BYTES:
            raise AgentError(f"uncompressed_length {frame.uncompressed_length} is over the bound")
        if frame.encoding == ENCODING_PROTO_ZSTD and self.args.zstd:
            try:
                data = zstandard.ZstdDecompressor().decompress(
                    data, max_output_size=frame.uncompressed_length)
            except zstandard.ZstdError as e:
                raise AgentError(f"the zstd payload does not decompress: {e}") from None
        elif frame.encoding != ENCODING_PROTO:
            raise AgentError(f"payload encoding {frame.encoding}, which this Hello did not accept")
        if len(data) != frame.uncompressed_length:
            raise AgentError(f"uncompressed_length {frame.uncompressed_length} for a "
                             f"{len(data)}-byte payload")
        payload = self.pb.FramePayload()
        payload.ParseFromString(data)
        return payload

    def on_frame(self, frame, last_delta):
        """Applies one frame; returns its revision if it is a delta."""
        if frame.resource not in self.store:
            raise AgentError("a frame of a resource that was not subscribed")
        if frame.scope != self.scope:
            raise AgentError(f"scope {frame.scope!r}, want {self.scope!r}")
        payload = self.payload(frame)
        report, counts = self.report, self.report["resources"][frame.resource]
        report["frames"] += 1
        delta = 0
        if frame.replace:
            self.on_replace(frame, payload)
            report["replace_frames"] += 1
        else:
            if self.resync is not None:
                raise AgentError("a delta frame inside a resync")
            if not self.synced and not self.saved:
                raise AgentError("a delta frame before the first Synced of a snapshot")
            if frame.revision <= self.revision or frame.revision < last_delta:
                raise AgentError(f"a delta at revision {frame.revision} after the complete "
                                 f"revision {self.revision} and a delta at {last_delta}")
            delta = frame.revision
            report["delta_frames"] += 1
        objects = self.store[frame.resource]
        for upsert in payload.upserts:
            objects[(upsert.namespace, upsert.name)] = upsert.value
        for key in payload.deletes:
            objects.pop((key.namespace, key.name), None)
        when = "live" if self.synced else "catchup"
        counts[f"{when}_upserts"] += len(payload.upserts)
        counts[f"{when}_deletes"] += len(payload.deletes)
        return delta

    def on_replace(self, frame, payload):
        """Records a replace frame in the open resync (section 5.4)."""
        if self.resync is None:
            self.resync, self.resync_revision = {}, frame.revision
        elif frame.revision != self.resync_revision:
            raise AgentError(f"a replace frame at revision {frame.revision} in a resync at "
                             f"{self.resync_revision}")
        coverage = self.resync.setdefault(
            frame.resource, {"whole": False, "buckets": set(), "upserted": set()})
        if frame.replaced_buckets:
            if not self.saved:
                raise AgentError("a replace frame for buckets, but this agent sent no digests")
            coverage["buckets"].update(frame.replaced_buckets)
        else:
            coverage["whole"] = True
        coverage["upserted"].update((u.namespace, u.name) for u in payload.upserts)

    def on_synced(self, revision):
        if self.resync is not None and self.resync_revision != revision:
            raise AgentError(f"Synced at {revision} closes a resync at {self.resync_revision}")
        if revision < self.revision and self.resync is None:
            raise AgentError(f"Synced at {revision}, before the complete revision {self.revision}")
        for resource, coverage in (self.resync or {}).items():
            self.report["replaced_buckets"] += len(coverage["buckets"])
            buckets = self.infos[resource].digest_buckets
            objects = self.store[resource]
            for key in list(objects):
                covered = coverage["whole"] or (
                    buckets and key_hash(*key) & (buckets - 1) in coverage["buckets"])
                if key not in coverage["upserted"] and covered:
                    del objects[key]
        self.resync = None
        self.revision = revision
        if not self.synced:
            self.synced = True
            self.report["synced_revision"] = revision
            for r, counts in self.report["resources"].items():
                counts["synced_objects"] = len(self.store[r])
                counts["synced_hash"] = content_hash(self.store[r])

    def finish(self):
        for r, counts in self.report["resources"].items():
            counts["objects"] = len(self.store[r])
            counts["hash"] = content_hash(self.store[r])

    def state(self):
        """What a later run resumes from: adopted at Synced, so only a synced stream saves."""
        return {
            "epoch": self.welcome.epoch.hex(), "revision": self.revision,
            "resources": {r: {"fingerprint": self.infos[r].fingerprint,
                              "digest_buckets": self.infos[r].digest_buckets,
                              "objects": [[ns, name, base64.b64encode(v).decode()]
                                          for (ns, name), v in sorted(self.store[r].items())]}
                          for r in self.args.resources},
        }


def run(args, pb, pb_grpc):
    saved = None
    if args.state and os.path.exists(args.state):
        with open(args.state, encoding="utf-8") as f:
            saved = json.load(f)
    deadline = time.monotonic() + args.timeout
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
    with grpc.insecure_channel(args.addr, options=options) as channel:
        agent = Agent(args, pb, saved)
        what = "grpc.health.v1.Health/Check"
        try:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="cattail.v1.Sync"),
                timeout=max(0.1, deadline - time.monotonic()))
            agent.report["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
            outbox = queue.Queue()

            def requests():
                while (item := outbox.get()) is not None:
                    yield item

            if not args.no_hello:
                outbox.put(pb.AgentMessage(hello=agent.hello()))
            responses = pb_grpc.SyncStub(channel).Watch(
                requests(), timeout=max(0.1, deadline - time.monotonic()))
            try:
                what = "waiting for Synced"
                while not agent.synced:
                    receive(agent, responses)
                outbox.put(pb.AgentMessage(ack=pb.Ack(revision=agent.report["synced_revision"])))
                agent.report["acked_revision"] = agent.report["synced_revision"]
                outbox.put(None)  # the agent's side of the stream ends here
                while agent.report["delta_frames"] < args.wait_deltas:
                    what = (f"waiting for {args.wait_deltas} delta frames "
                            f"(got {agent.report['delta_frames']})")
                    receive(agent, responses)
            finally:
                outbox.put(None)
                responses.cancel()
        except grpc.RpcError as e:
            if time.monotonic() >= deadline:
                raise AgentError(f"timed out after {args.timeout}s {what}: {e.details()}") from None
            raise AgentError(f"{what}: gRPC status {e.code().name}: {e.details()}") from None
        agent.finish()
        if args.state:
            tmp = args.state + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(agent.state(), f)
            os.replace(tmp, args.state)
        return agent.report


def receive(agent, responses):
    try:
        message = next(responses)
    except StopIteration:
        raise AgentError("the server ended the stream with OK") from None
    agent.apply(message, message.ByteSize())


def seconds(text):
    """A duration in seconds, as 30 or, like grpcagent's flag, 30s."""
    return float(text[:-1] if text.endswith("s") else text)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="cattail_agent.py", description=__doc__.split("\n")[0])
    p.add_argument("-addr", required=True, help="the server's gRPC address, host:port")
    p.add_argument("-node", default="", help="the node name (required with -node-scoped)")
    p.add_argument("-agent-id", dest="agent_id", default="", help="default: pyagent-NODE")
    p.add_argument("-resource", action="append", required=True,
                   help="a resource such as v1/pods; repeatable or comma separated")
    p.add_argument("-node-scoped", dest="node_scoped", action="store_true",
                   help="subscribe to every resource scoped to -node")
    p.add_argument("-timeout", type=seconds, default=30.0,
                   help="give up after this long, from start to exit (30, 30s)")
    p.add_argument("-wait-deltas", dest="wait_deltas", type=int, default=0,
                   help="after the Ack, read until this many delta frames arrived")
    p.add_argument("-state", default="", help="resume from, and save to, this JSON file")
    p.add_argument("-zstd", action="store_true", help="accept ENCODING_PROTO_ZSTD payloads")
    p.add_argument("-protocol-version", dest="protocol_version", type=int, default=1,
                   help="Hello.protocol_version (to test refusals)")
    p.add_argument("-pad-agent-id", dest="pad_agent_id", type=int, default=0,
                   help="append this many bytes to the agent id (to test refusals)")
    p.add_argument("-no-hello", dest="no_hello", action="store_true",
                   help="open the stream and never send a Hello (to test refusals)")
    args = p.parse_args(argv)
    args.resources = [r.strip() for value in args.resource for r in value.split(",") if r.strip()]
    if args.node_scoped and not args.node:
        p.error("-node-scoped needs -node")
    if args.timeout <= 0 or args.wait_deltas < 0:
        p.error("-timeout must be positive and -wait-deltas not negative")
    args.agent_id = args.agent_id or f"pyagent-{args.node}"
    return args


def main():
    args = parse_args(sys.argv[1:])
    try:
        pb, pb_grpc = generated_modules()
        report = run(args, pb, pb_grpc)
    except AgentError as e:
        print(f"cattail_agent.py: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
