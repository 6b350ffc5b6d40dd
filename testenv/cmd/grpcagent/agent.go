package main

// The agent's store: it applies ServerMessages as docs/PROTOCOL.md sections 3 to 5 say, checks
// what a first connect must look like (a Welcome first, a snapshot of replace frames at one
// revision, then Synced, then deltas of higher revisions), and counts what it saw.

import (
	"encoding/hex"
	"fmt"
	"hash/fnv"
)

// agent is the state of one Watch stream.
type agent struct {
	node string
	// nodeScoped by subscribed resource.
	subscriptions map[string]bool
	store         map[string]map[objectKey][]byte
	report        *report
	// resuming is set when the Hello carried a Resume from a saved state.
	resuming bool
	// infos is the Welcome's ResourceInfo by resource.
	infos map[string]resourceInfo

	welcomed bool
	// synced is set by the first Synced.
	synced bool
	// revision is the complete revision (PROTOCOL.md section 4.4).
	revision uint64
	// resync holds, while a resync is open, what it covers per resource.
	resync map[string]*coverage
	// resyncRevision is the revision of the open resync's replace frames.
	resyncRevision uint64
	// lastDelta is the revision of the latest delta frame of the message being applied.
	lastDelta uint64
}

// coverage is what an open resync replaces of one resource: all of it, or some digest
// buckets, and the keys its replace frames upserted.
type coverage struct {
	whole    bool
	buckets  map[uint64]bool
	upserted map[objectKey]bool
}

// newAgent starts empty, or from saved (nil on a first run) for the resources it subscribes.
func newAgent(node string, subscriptions []subscription, saved *savedState, r *report) *agent {
	a := &agent{
		node:          node,
		subscriptions: map[string]bool{},
		store:         map[string]map[objectKey][]byte{},
		report:        r,
		resuming:      saved != nil,
		infos:         map[string]resourceInfo{},
	}
	for _, s := range subscriptions {
		a.subscriptions[s.resource] = s.nodeScoped
		objects := map[objectKey][]byte{}
		if saved != nil && saved.Resources[s.resource] != nil {
			for _, o := range saved.Resources[s.resource].Objects {
				objects[objectKey{o.Namespace, o.Name}] = o.Value
			}
		}
		a.store[s.resource] = objects
		r.Resources[s.resource] = &resourceReport{}
	}
	if saved != nil {
		a.revision = saved.Revision
	}
	return a
}

// apply handles one message: welcome, frames in order, synced, heartbeat.
func (a *agent) apply(m serverMessage, size int) error {
	a.report.Messages++
	a.report.Bytes += size
	a.report.LargestMessage = max(a.report.LargestMessage, size)
	if m.welcome != nil {
		if err := a.welcome(m.welcome); err != nil {
			return err
		}
	} else if !a.welcomed {
		return fmt.Errorf("the first ServerMessage has no Welcome")
	}
	a.lastDelta = 0
	for i, f := range m.frames {
		if err := a.frame(f); err != nil {
			return fmt.Errorf("frame %d of message %d (%s, revision %d): %w",
				i, a.report.Messages, f.resource, f.revision, err)
		}
	}
	if a.lastDelta != 0 {
		// A message holds whole revisions: the last delta's revision is complete.
		a.revision = a.lastDelta
	}
	if m.synced != nil {
		if err := a.closeResync(m.synced.revision); err != nil {
			return err
		}
	}
	if m.heartbeat != nil {
		if a.resync != nil {
			return fmt.Errorf("a Heartbeat inside a resync")
		}
		a.report.Heartbeats++
		a.revision = max(a.revision, m.heartbeat.headRevision)
	}
	a.report.Revision = a.revision
	return nil
}

func (a *agent) welcome(w *welcome) error {
	if a.welcomed {
		return fmt.Errorf("a second Welcome, in message %d", a.report.Messages)
	}
	a.welcomed = true
	if w.protocolVersion != protocolVersion {
		return fmt.Errorf("Welcome.protocol_version is %d, want %d", w.protocolVersion, protocolVersion)
	}
	if len(w.epoch) != 16 {
		return fmt.Errorf("Welcome.epoch has %d bytes, want 16", len(w.epoch))
	}
	served := a.infos
	for _, info := range w.resources {
		served[info.resource] = info
	}
	for resource, nodeScoped := range a.subscriptions {
		info, ok := served[resource]
		if !ok {
			return fmt.Errorf("Welcome.resources does not list %s", resource)
		}
		if nodeScoped && info.scopeField == "" {
			return fmt.Errorf("%s is node scoped here but has no scope field in the Welcome", resource)
		}
	}
	a.report.ServerID = w.serverID
	a.report.Epoch = hex.EncodeToString(w.epoch)
	a.report.HeadRevision = w.headRevision
	a.report.ResumeMode = resumeModes[w.resumeMode]
	a.report.MaxMessageBytes = w.maxMessageBytes
	a.report.HeartbeatIntervalMs = w.heartbeatInterval
	if !a.resuming && w.resumeMode != 1 {
		return fmt.Errorf("resume mode %d for a Hello without Resume, want RESUME_MODE_SNAPSHOT", w.resumeMode)
	}
	if w.resumeMode != 2 {
		// The saved revision belongs to another epoch, or is too old: the catch-up is a
		// resync, and the complete revision is its Synced's.
		a.revision = 0
	}
	return nil
}

func (a *agent) frame(f frame) error {
	nodeScoped, ok := a.subscriptions[f.resource]
	if !ok {
		return fmt.Errorf("a frame of a resource that was not subscribed")
	}
	scope := ""
	if nodeScoped {
		scope = a.node
	}
	if f.scope != scope {
		return fmt.Errorf("scope %q, want %q", f.scope, scope)
	}
	if f.encoding != encodingProto {
		return fmt.Errorf("payload encoding %d; the Hello accepted only ENCODING_PROTO (1)", f.encoding)
	}
	if f.uncompressedLength != uint64(len(f.payload)) {
		return fmt.Errorf("uncompressed_length %d for a %d-byte ENCODING_PROTO payload",
			f.uncompressedLength, len(f.payload))
	}
	payload, err := decodePayload(f.payload)
	if err != nil {
		return err
	}
	counts := a.report.Resources[f.resource]
	a.report.Frames++
	if f.replace {
		if err := a.replace(f, payload); err != nil {
			return err
		}
		a.report.ReplaceFrames++
	} else {
		if a.resync != nil {
			return fmt.Errorf("a delta frame inside a resync")
		}
		if !a.synced && !a.resuming {
			return fmt.Errorf("a delta frame before the first Synced of a snapshot")
		}
		if f.revision <= a.revision || f.revision < a.lastDelta {
			return fmt.Errorf("a delta at revision %d after the complete revision %d and a delta at %d",
				f.revision, a.revision, a.lastDelta)
		}
		a.lastDelta = f.revision
		a.report.DeltaFrames++
	}
	objects := a.store[f.resource]
	for _, u := range payload.upserts {
		objects[u.key] = u.value
	}
	for _, k := range payload.deletes {
		delete(objects, k)
	}
	if a.synced {
		counts.LiveUpserts += len(payload.upserts)
		counts.LiveDeletes += len(payload.deletes)
	} else {
		counts.CatchUpUpserts += len(payload.upserts)
		counts.CatchUpDeletes += len(payload.deletes)
	}
	return nil
}

// replace records a replace frame in the open resync, opening one if needed (section 5.4).
func (a *agent) replace(f frame, payload framePayload) error {
	if len(f.replacedBuckets) > 0 && !a.resuming {
		// Only a digest resync names buckets, and only an agent that sent digests gets one.
		return fmt.Errorf("a replace frame for %d buckets, but this agent sent no digests", len(f.replacedBuckets))
	}
	if a.resync == nil {
		a.resync = map[string]*coverage{}
		a.resyncRevision = f.revision
	} else if f.revision != a.resyncRevision {
		return fmt.Errorf("a replace frame at revision %d in a resync at %d", f.revision, a.resyncRevision)
	}
	c := a.resync[f.resource]
	if c == nil {
		c = &coverage{buckets: map[uint64]bool{}, upserted: map[objectKey]bool{}}
		a.resync[f.resource] = c
	}
	if len(f.replacedBuckets) == 0 {
		c.whole = true
	}
	for _, b := range f.replacedBuckets {
		c.buckets[b] = true
	}
	for _, u := range payload.upserts {
		c.upserted[u.key] = true
	}
	return nil
}

// closeResync handles Synced{revision}: objects a whole-coverage resync did not upsert go.
func (a *agent) closeResync(revision uint64) error {
	if a.resync != nil && a.resyncRevision != revision {
		return fmt.Errorf("Synced at %d closes a resync of replace frames at %d", revision, a.resyncRevision)
	}
	if revision < a.revision && a.resync == nil {
		return fmt.Errorf("Synced at %d, before the complete revision %d", revision, a.revision)
	}
	for resource, c := range a.resync {
		a.report.ReplacedBuckets += len(c.buckets)
		buckets := a.infos[resource].digestBuckets
		objects := a.store[resource]
		for key := range objects {
			covered := c.whole || (buckets > 0 && c.buckets[keyHash(key)&(buckets-1)])
			if covered && !c.upserted[key] {
				delete(objects, key)
			}
		}
	}
	a.resync = nil
	a.revision = revision
	if !a.synced {
		a.synced = true
		a.report.SyncedRevision = revision
		for resource, counts := range a.report.Resources {
			counts.SyncedObjects = len(a.store[resource])
			counts.SyncedHash = contentHash(a.store[resource])
		}
	}
	return nil
}

// finish fills in what the agent holds at the end.
func (a *agent) finish() {
	for resource, counts := range a.report.Resources {
		counts.Objects = len(a.store[resource])
		counts.Hash = contentHash(a.store[resource])
	}
}

// contentHash is an order-independent summary of a resource's objects, for the test to compare
// with the server's store: the XOR of FNV-1a 64 over namespace, 0, name, 0, value of each object.
// (The protocol's own digest is XXH3, which Go's standard library lacks.)
func contentHash(objects map[objectKey][]byte) string {
	var sum uint64
	for k, value := range objects {
		h := fnv.New64a()
		h.Write([]byte(k.namespace))
		h.Write([]byte{0})
		h.Write([]byte(k.name))
		h.Write([]byte{0})
		h.Write(value)
		sum ^= h.Sum64()
	}
	return fmt.Sprintf("%016x", sum)
}
