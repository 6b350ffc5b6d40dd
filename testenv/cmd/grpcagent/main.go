// Command grpcagent is a cattail agent built on grpc-go, with no code generated for cattail.v1:
// proof that docs/PROTOCOL.md is enough for a gRPC stack other than the server's own.
//
// It asks grpc.health.v1.Health/Check about "cattail.v1.Sync", opens cattail.v1.Sync/Watch,
// sends a Hello (accepting ENCODING_PROTO only, so payloads need no zstd), applies frames until
// Synced, sends an Ack of the synced revision and closes its side of the stream. With
// -wait-deltas N it then keeps reading the half-closed stream until N delta frames arrived.
// With -state FILE it resumes from the state a synced run saved there (epoch, revision, objects,
// digests) and saves its own at the end.
// It prints one JSON line of what it saw on stdout and exits 0; on any error or timeout it
// prints the reason on stderr and exits 1 (2 for bad flags).
//
// server/tests/grpc_interop.rs builds and runs it against both of the server's transports.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

// maxMessageBytes is what the agent accepts per message: above the server's 16 MiB default, as
// PROTOCOL.md section 2 asks (grpc-go's default is 4 MiB).
const maxMessageBytes = 64 << 20

// The Watch method, as a generated client would describe it.
var watchDesc = grpc.StreamDesc{StreamName: "Watch", ServerStreams: true, ClientStreams: true}

const watchMethod = "/cattail.v1.Sync/Watch"

func init() {
	// The Watch messages are []byte encoded by hand; anything else (the health messages) is
	// protobuf. Registered under "proto", like the default codec it wraps, so every call goes
	// out as plain "application/grpc", exactly as from generated code (grpc.ForceCodec would
	// add its name as a content-subtype).
	encoding.RegisterCodecV2(bytesCodec{proto: encoding.GetCodecV2("proto")})
}

// bytesCodec passes []byte messages through and leaves the rest to the protobuf codec.
type bytesCodec struct{ proto encoding.CodecV2 }

func (c bytesCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.([]byte); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return c.proto.Marshal(v)
}

func (c bytesCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if b, ok := v.(*[]byte); ok {
		// A copy: gRPC frees data's buffers when this returns.
		*b = data.Materialize()
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

func (bytesCodec) Name() string { return "proto" }

// config is the command line.
type config struct {
	addr          string
	node          string
	agentID       string
	resources     []string
	nodeScoped    bool
	timeout       time.Duration
	waitDeltas    int
	subscriptions []subscription
	// protocolVersion is the Hello's protocol_version (1 unless a test asks for another).
	protocolVersion uint64
	// padAgentID makes the Hello this many bytes larger, to meet the Hello size limit.
	padAgentID int
	// noHello opens the stream and sends nothing, to meet the Hello deadline.
	noHello bool
	// state is the file to resume from and save to; empty for none.
	state string
}

// report is the JSON line on stdout.
type report struct {
	Health              string `json:"health"`
	ServerID            string `json:"server_id"`
	Epoch               string `json:"epoch"`
	HeadRevision        uint64 `json:"head_revision"`
	ResumeMode          string `json:"resume_mode"`
	MaxMessageBytes     uint64 `json:"max_message_bytes"`
	HeartbeatIntervalMs uint64 `json:"heartbeat_interval_ms"`
	SyncedRevision      uint64 `json:"synced_revision"`
	AckedRevision       uint64 `json:"acked_revision"`
	// Revision is the complete revision when the agent stopped.
	Revision       uint64 `json:"revision"`
	Messages       int    `json:"messages"`
	Bytes          int    `json:"bytes"`
	LargestMessage int    `json:"largest_message"`
	Frames         int    `json:"frames"`
	ReplaceFrames  int    `json:"replace_frames"`
	DeltaFrames    int    `json:"delta_frames"`
	// ReplacedBuckets counts the digest buckets that resyncs replaced.
	ReplacedBuckets int                        `json:"replaced_buckets"`
	Heartbeats      int                        `json:"heartbeats"`
	Resources       map[string]*resourceReport `json:"resources"`
}

// resourceReport is what the agent saw of one subscribed resource.
type resourceReport struct {
	// Upserts and deletes before the first Synced (the snapshot).
	CatchUpUpserts int `json:"catchup_upserts"`
	CatchUpDeletes int `json:"catchup_deletes"`
	// Objects held at the first Synced, and their content hash.
	SyncedObjects int    `json:"synced_objects"`
	SyncedHash    string `json:"synced_hash"`
	// Upserts and deletes after it.
	LiveUpserts int `json:"live_upserts"`
	LiveDeletes int `json:"live_deletes"`
	// Objects held at the end, and their content hash.
	Objects int    `json:"objects"`
	Hash    string `json:"hash"`
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "grpcagent: %v\n", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	r, err := run(ctx, cfg)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "grpcagent: %v\n", err)
		os.Exit(1)
	}
	line, err := json.Marshal(r)
	if err != nil {
		fmt.Fprintf(os.Stderr, "grpcagent: encoding the report: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(string(line))
}

func parseFlags(args []string) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("grpcagent", flag.ContinueOnError)
	fs.StringVar(&cfg.addr, "addr", "", "the server's gRPC address, host:port (required)")
	fs.StringVar(&cfg.node, "node", "", "the node name (required with -node-scoped)")
	fs.StringVar(&cfg.agentID, "agent-id", "", "the agent id (default grpcagent-NODE)")
	fs.Func("resource", "a resource to subscribe to, like v1/pods; repeatable or comma separated (required)",
		func(value string) error {
			for _, r := range strings.Split(value, ",") {
				if r = strings.TrimSpace(r); r != "" {
					cfg.resources = append(cfg.resources, r)
				}
			}
			return nil
		})
	fs.BoolVar(&cfg.nodeScoped, "node-scoped", false, "subscribe to every resource scoped to -node")
	fs.DurationVar(&cfg.timeout, "timeout", 30*time.Second, "give up after this long, from start to exit")
	fs.IntVar(&cfg.waitDeltas, "wait-deltas", 0, "after the Ack, read until this many delta frames arrived")
	fs.Uint64Var(&cfg.protocolVersion, "protocol-version", protocolVersion, "the Hello's protocol_version")
	fs.IntVar(&cfg.padAgentID, "pad-agent-id", 0, "append this many bytes to the agent id (a Hello too large)")
	fs.BoolVar(&cfg.noHello, "no-hello", false, "open the stream and send no Hello (the Hello deadline)")
	fs.StringVar(&cfg.state, "state", "", "resume from, and save to, this JSON file")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	switch {
	case fs.NArg() > 0:
		return cfg, fmt.Errorf("unexpected arguments: %q", fs.Args())
	case cfg.addr == "":
		return cfg, errors.New("-addr is required")
	case len(cfg.resources) == 0:
		return cfg, errors.New("at least one -resource is required")
	case cfg.nodeScoped && cfg.node == "":
		return cfg, errors.New("-node-scoped needs -node")
	case cfg.timeout <= 0:
		return cfg, errors.New("-timeout must be positive")
	case cfg.waitDeltas < 0:
		return cfg, errors.New("-wait-deltas must not be negative")
	case cfg.padAgentID < 0:
		return cfg, errors.New("-pad-agent-id must not be negative")
	}
	if cfg.agentID == "" {
		cfg.agentID = "grpcagent-" + cfg.node
	}
	cfg.agentID += strings.Repeat("x", cfg.padAgentID)
	for _, r := range cfg.resources {
		cfg.subscriptions = append(cfg.subscriptions, subscription{resource: r, nodeScoped: cfg.nodeScoped})
	}
	return cfg, nil
}

// run does the health check and the Watch, and returns what it saw.
func run(ctx context.Context, cfg config) (*report, error) {
	conn, err := grpc.NewClient(cfg.addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes)))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", cfg.addr, err)
	}
	defer conn.Close()

	r := &report{Resources: map[string]*resourceReport{}}
	health, err := grpc_health_v1.NewHealthClient(conn).Check(ctx,
		&grpc_health_v1.HealthCheckRequest{Service: "cattail.v1.Sync"})
	if err != nil {
		return nil, callError(ctx, cfg, "grpc.health.v1.Health/Check", err)
	}
	r.Health = health.GetStatus().String()

	if err := watch(ctx, conn, cfg, r); err != nil {
		return nil, err
	}
	return r, nil
}

// watch runs one Watch stream: Hello, catch-up to Synced, Ack, close, then deltas if asked.
func watch(ctx context.Context, conn *grpc.ClientConn, cfg config, r *report) error {
	// Cancelling this context at the end resets the stream: the agent is done with it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var saved *savedState
	if cfg.state != "" {
		var err error
		if saved, err = loadState(cfg.state); err != nil {
			return err
		}
	}
	stream, err := conn.NewStream(ctx, &watchDesc, watchMethod)
	if err != nil {
		return callError(ctx, cfg, watchMethod, err)
	}
	a := newAgent(cfg.node, cfg.subscriptions, saved, r)
	if cfg.noHello {
		var ignored []byte
		err := stream.RecvMsg(&ignored)
		return callError(ctx, cfg, "waiting without a Hello", err)
	}
	h := hello{
		protocolVersion: cfg.protocolVersion,
		agentID:         cfg.agentID,
		nodeName:        cfg.node,
		agentVersion:    "grpcagent (grpc-go " + grpc.Version + ")",
		subscriptions:   cfg.subscriptions,
	}
	if saved != nil {
		h.resume = resumeOf(saved, cfg.subscriptions, cfg.node, a.store)
	}
	if err := send(stream, h.encode()); err != nil {
		return callError(ctx, cfg, "sending the Hello", err)
	}
	for !a.synced {
		if err := receive(stream, a); err != nil {
			return callError(ctx, cfg, fmt.Sprintf("waiting for Synced (after %d messages)", r.Messages), err)
		}
	}
	if err := send(stream, encodeAck(r.SyncedRevision)); err != nil {
		return callError(ctx, cfg, "sending the Ack", err)
	}
	r.AckedRevision = r.SyncedRevision
	if err := stream.CloseSend(); err != nil {
		return callError(ctx, cfg, "closing the agent's side", err)
	}
	for r.DeltaFrames < cfg.waitDeltas {
		if err := receive(stream, a); err != nil {
			what := fmt.Sprintf("waiting for %d delta frames (got %d)", cfg.waitDeltas, r.DeltaFrames)
			return callError(ctx, cfg, what, err)
		}
	}
	a.finish()
	if cfg.state != "" {
		if err := saveState(cfg.state, stateOf(a)); err != nil {
			return fmt.Errorf("saving the state: %w", err)
		}
	}
	return nil
}

// send sends one message; if the stream has ended, the error is the status it ended with.
func send(stream grpc.ClientStream, message []byte) error {
	err := stream.SendMsg(message)
	if !errors.Is(err, io.EOF) {
		return err
	}
	// Messages still buffered come first; the status follows them.
	for {
		var ignored []byte
		if err := stream.RecvMsg(&ignored); err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("the server ended the stream with OK")
			}
			return err
		}
	}
}

// receive reads one ServerMessage and applies it.
func receive(stream grpc.ClientStream, a *agent) error {
	var message []byte
	if err := stream.RecvMsg(&message); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("the server ended the stream with OK")
		}
		return err
	}
	decoded, err := decodeServerMessage(message)
	if err != nil {
		return fmt.Errorf("message %d (%d bytes) does not decode: %w", a.report.Messages+1, len(message), err)
	}
	return a.apply(decoded, len(message))
}

// callError says what failed: a timeout as such, a gRPC status with its code.
func callError(ctx context.Context, cfg config, what string, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("timed out after %s %s: %v", cfg.timeout, what, err)
	}
	if s, ok := status.FromError(err); ok {
		return fmt.Errorf("%s: gRPC status %s: %s", what, s.Code(), s.Message())
	}
	return fmt.Errorf("%s: %w", what, err)
}
