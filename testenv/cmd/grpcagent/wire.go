package main

// The few cattail.v1 messages this agent sends and reads, encoded and decoded by hand with
// protowire. Field numbers are those of proto/cattail/v1/sync.proto. Decoding follows protobuf's
// rules: unknown fields are skipped, a repeated field appends, and a singular message field
// that appears twice merges (PROTOCOL.md section 3: ServerMessages are joined byte for byte).

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

const (
	protocolVersion = 1
	// Encoding.ENCODING_PROTO: the only payload encoding this agent accepts.
	encodingProto = 1
)

// resumeModes names ResumeMode values for the report.
var resumeModes = map[uint64]string{
	0: "RESUME_MODE_UNSPECIFIED",
	1: "RESUME_MODE_SNAPSHOT",
	2: "RESUME_MODE_DELTAS",
	3: "RESUME_MODE_DIGEST",
}

// subscription is one Subscription of a Hello.
type subscription struct {
	resource   string
	nodeScoped bool
}

// hello is the agent's first message.
type hello struct {
	protocolVersion uint64
	agentID         string
	nodeName        string
	agentVersion    string
	subscriptions   []subscription
	// resume is what an earlier run kept, or nil on a first connect.
	resume *resume
}

// resume is a Hello's Resume.
type resume struct {
	epoch    []byte
	revision uint64
	digests  []resourceDigest
}

// resourceDigest is one ResourceDigest of a Resume.
type resourceDigest struct {
	resource    string
	scope       string
	fingerprint uint64
	buckets     []uint64
}

// encode returns AgentMessage{hello}.
func (h hello) encode() []byte {
	var b []byte
	b = appendVarint(b, 1, h.protocolVersion)
	b = appendString(b, 2, h.agentID)
	b = appendString(b, 3, h.nodeName)
	b = appendString(b, 4, h.agentVersion)
	for _, s := range h.subscriptions {
		var sub []byte
		sub = appendString(sub, 1, s.resource)
		if s.nodeScoped {
			sub = appendVarint(sub, 2, 1)
		}
		b = protowire.AppendTag(b, 5, protowire.BytesType)
		b = protowire.AppendBytes(b, sub)
	}
	if h.resume != nil {
		b = protowire.AppendTag(b, 6, protowire.BytesType)
		b = protowire.AppendBytes(b, h.resume.encode())
	}
	// accepted_encodings, packed as proto3 packs repeated enums: PROTO only, so no zstd here.
	b = protowire.AppendTag(b, 7, protowire.BytesType)
	b = protowire.AppendBytes(b, protowire.AppendVarint(nil, encodingProto))
	return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), b)
}

// encode returns the Resume message's bytes.
func (r *resume) encode() []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, r.epoch)
	b = appendVarint(b, 2, r.revision)
	for _, d := range r.digests {
		var m []byte
		m = appendString(m, 1, d.resource)
		m = appendString(m, 2, d.scope)
		m = protowire.AppendTag(m, 3, protowire.Fixed64Type)
		m = protowire.AppendFixed64(m, d.fingerprint)
		m = appendVarint(m, 4, uint64(len(d.buckets)))
		var packed []byte
		for _, v := range d.buckets {
			packed = protowire.AppendFixed64(packed, v)
		}
		m = protowire.AppendTag(m, 5, protowire.BytesType)
		m = protowire.AppendBytes(m, packed)
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	return b
}

// encodeAck returns AgentMessage{ack: Ack{revision}}.
func encodeAck(revision uint64) []byte {
	ack := appendVarint(nil, 1, revision)
	return protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), ack)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
}

// serverMessage is one decoded ServerMessage.
type serverMessage struct {
	frames    []frame
	welcome   *welcome
	synced    *synced
	heartbeat *heartbeat
}

type welcome struct {
	protocolVersion   uint64
	serverID          string
	epoch             []byte
	headRevision      uint64
	resources         []resourceInfo
	maxMessageBytes   uint64
	heartbeatInterval uint64
	resumeMode        uint64
}

type resourceInfo struct {
	resource      string
	fingerprint   uint64
	scopeField    string
	digestBuckets uint64
}

type frame struct {
	revision           uint64
	resource           string
	scope              string
	replace            bool
	encoding           uint64
	payload            []byte
	uncompressedLength uint64
	replacedBuckets    []uint64
}

type synced struct{ revision uint64 }

type heartbeat struct{ headRevision uint64 }

// framePayload is a decoded FramePayload.
type framePayload struct {
	upserts []upsert
	deletes []objectKey
}

type objectKey struct{ namespace, name string }

type upsert struct {
	key   objectKey
	value []byte
}

// field is one field of an encoded message: its number and wire type, and its value as a
// number (varint, fixed32, fixed64) or as bytes (length-delimited).
type field struct {
	num  protowire.Number
	typ  protowire.Type
	v    uint64
	data []byte
}

// fields calls visit on every field of b in order.
func fields(b []byte, visit func(f field) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("a field tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		f := field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			f.v, n = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			f.v, n = protowire.ConsumeFixed64(b)
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(b)
			f.v = uint64(v)
		case protowire.BytesType:
			f.data, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := visit(f); err != nil {
			return err
		}
	}
	return nil
}

// expect fails unless f has wire type typ.
func (f field) expect(typ protowire.Type) error {
	if f.typ != typ {
		return fmt.Errorf("field %d has wire type %d, want %d", f.num, f.typ, typ)
	}
	return nil
}

// decodeServerMessage decodes one gRPC message of the Watch response stream.
func decodeServerMessage(b []byte) (serverMessage, error) {
	var m serverMessage
	err := fields(b, func(f field) error {
		if f.num < 1 || f.num > 4 {
			return nil
		}
		if err := f.expect(protowire.BytesType); err != nil {
			return fmt.Errorf("ServerMessage: %w", err)
		}
		switch f.num {
		case 1:
			fr, err := decodeFrame(f.data)
			if err != nil {
				return fmt.Errorf("ServerMessage.frames[%d]: %w", len(m.frames), err)
			}
			m.frames = append(m.frames, fr)
		case 2:
			if m.welcome == nil {
				m.welcome = &welcome{}
			}
			return m.welcome.merge(f.data)
		case 3:
			if m.synced == nil {
				m.synced = &synced{}
			}
			return fields(f.data, func(f field) error {
				if f.num == 1 {
					m.synced.revision = f.v
					return f.expect(protowire.VarintType)
				}
				return nil
			})
		case 4:
			if m.heartbeat == nil {
				m.heartbeat = &heartbeat{}
			}
			return fields(f.data, func(f field) error {
				if f.num == 1 {
					m.heartbeat.headRevision = f.v
					return f.expect(protowire.VarintType)
				}
				return nil
			})
		}
		return nil
	})
	return m, err
}

func (w *welcome) merge(b []byte) error {
	err := fields(b, func(f field) error {
		switch f.num {
		case 1:
			w.protocolVersion = f.v
			return f.expect(protowire.VarintType)
		case 2:
			w.serverID = string(f.data)
			return f.expect(protowire.BytesType)
		case 3:
			w.epoch = f.data
			return f.expect(protowire.BytesType)
		case 4:
			w.headRevision = f.v
			return f.expect(protowire.VarintType)
		case 5:
			if err := f.expect(protowire.BytesType); err != nil {
				return err
			}
			info, err := decodeResourceInfo(f.data)
			w.resources = append(w.resources, info)
			return err
		case 6:
			if err := f.expect(protowire.BytesType); err != nil {
				return err
			}
			return fields(f.data, func(f field) error {
				switch f.num {
				case 1:
					w.maxMessageBytes = f.v
				case 3:
					w.heartbeatInterval = f.v
				}
				return nil
			})
		case 7:
			w.resumeMode = f.v
			return f.expect(protowire.VarintType)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("Welcome: %w", err)
	}
	return nil
}

func decodeResourceInfo(b []byte) (resourceInfo, error) {
	var r resourceInfo
	err := fields(b, func(f field) error {
		switch f.num {
		case 1:
			r.resource = string(f.data)
			return f.expect(protowire.BytesType)
		case 2:
			r.fingerprint = f.v
			return f.expect(protowire.Fixed64Type)
		case 3:
			r.scopeField = string(f.data)
			return f.expect(protowire.BytesType)
		case 4:
			r.digestBuckets = f.v
			return f.expect(protowire.VarintType)
		}
		return nil
	})
	return r, err
}

func decodeFrame(b []byte) (frame, error) {
	var fr frame
	err := fields(b, func(f field) error {
		switch f.num {
		case 1:
			fr.revision = f.v
			return f.expect(protowire.VarintType)
		case 2:
			fr.resource = string(f.data)
			return f.expect(protowire.BytesType)
		case 3:
			fr.scope = string(f.data)
			return f.expect(protowire.BytesType)
		case 4:
			fr.replace = f.v != 0
			return f.expect(protowire.VarintType)
		case 5:
			fr.encoding = f.v
			return f.expect(protowire.VarintType)
		case 6:
			fr.payload = f.data
			return f.expect(protowire.BytesType)
		case 8:
			fr.uncompressedLength = f.v
			return f.expect(protowire.VarintType)
		case 9:
			return fr.appendBuckets(f)
		}
		return nil
	})
	return fr, err
}

// appendBuckets reads replaced_buckets, packed or not: a parser must accept both.
func (fr *frame) appendBuckets(f field) error {
	switch f.typ {
	case protowire.VarintType:
		fr.replacedBuckets = append(fr.replacedBuckets, f.v)
	case protowire.BytesType:
		for b := f.data; len(b) > 0; {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("replaced_buckets: %w", protowire.ParseError(n))
			}
			fr.replacedBuckets = append(fr.replacedBuckets, v)
			b = b[n:]
		}
	default:
		return f.expect(protowire.BytesType)
	}
	return nil
}

func decodePayload(b []byte) (framePayload, error) {
	var p framePayload
	err := fields(b, func(f field) error {
		switch f.num {
		case 1:
			if err := f.expect(protowire.BytesType); err != nil {
				return err
			}
			var u upsert
			err := fields(f.data, func(f field) error {
				switch f.num {
				case 1:
					u.key.namespace = string(f.data)
				case 2:
					u.key.name = string(f.data)
				case 3:
					u.value = f.data
				default:
					return nil
				}
				return f.expect(protowire.BytesType)
			})
			p.upserts = append(p.upserts, u)
			return err
		case 2:
			if err := f.expect(protowire.BytesType); err != nil {
				return err
			}
			var k objectKey
			err := fields(f.data, func(f field) error {
				switch f.num {
				case 1:
					k.namespace = string(f.data)
				case 2:
					k.name = string(f.data)
				default:
					return nil
				}
				return f.expect(protowire.BytesType)
			})
			p.deletes = append(p.deletes, k)
			return err
		}
		return nil
	})
	if err != nil {
		return p, fmt.Errorf("FramePayload: %w", err)
	}
	return p, nil
}
