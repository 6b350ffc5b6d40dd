package main

// What an agent keeps between runs, to resume (PROTOCOL.md sections 4.3 and 7): the epoch and
// complete revision it adopted at Synced, and per resource the server's fingerprint and digest
// bucket count and the objects it held. -state FILE loads it before the Hello and saves it after
// a synced stream, so a test can see a second run resume by deltas or by digest.

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/zeebo/xxh3"
)

// savedState is the JSON of a -state file.
type savedState struct {
	Epoch     string                    `json:"epoch"`
	Revision  uint64                    `json:"revision"`
	Resources map[string]*savedResource `json:"resources"`
}

// savedResource is one resource of a saved state.
type savedResource struct {
	Fingerprint   uint64        `json:"fingerprint"`
	DigestBuckets uint64        `json:"digest_buckets"`
	Objects       []savedObject `json:"objects"`
}

// savedObject is one object: namespace, name and value (base64 in JSON).
type savedObject struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Value     []byte `json:"value"`
}

// loadState reads path; a missing file is a first run (nil, nil).
func loadState(path string) (*savedState, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the state file: %w", err)
	}
	var s savedState
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("the state file %s is not a saved state: %w", path, err)
	}
	if epoch, err := hex.DecodeString(s.Epoch); err != nil || len(epoch) != 16 {
		return nil, fmt.Errorf("the state file %s has no 16-byte hex epoch", path)
	}
	return &s, nil
}

// saveState writes s to path.
func saveState(path string, s *savedState) error {
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// resumeOf is the Hello's Resume for a saved state: its epoch and revision, and a digest of each
// subscribed resource it holds, at the bucket count of the server it came from.
func resumeOf(s *savedState, subscriptions []subscription, node string, store map[string]map[objectKey][]byte) *resume {
	epoch, _ := hex.DecodeString(s.Epoch)
	r := &resume{epoch: epoch, revision: s.Revision}
	for _, sub := range subscriptions {
		kept := s.Resources[sub.resource]
		if kept == nil || kept.DigestBuckets == 0 {
			continue
		}
		scope := ""
		if sub.nodeScoped {
			scope = node
		}
		r.digests = append(r.digests, resourceDigest{
			resource:    sub.resource,
			scope:       scope,
			fingerprint: kept.Fingerprint,
			buckets:     digest(store[sub.resource], kept.DigestBuckets),
		})
	}
	return r
}

// keyHash is XXH3-64 of namespace, 0, name: it picks an object's bucket (section 7.1).
func keyHash(k objectKey) uint64 {
	return xxh3.HashString(k.namespace + "\x00" + k.name)
}

// digest recomputes a (resource, scope)'s digest from the objects held: each bucket is the XOR
// of XXH3-64 over namespace, 0, name, 0, value of the objects whose key hash falls in it.
func digest(objects map[objectKey][]byte, buckets uint64) []uint64 {
	out := make([]uint64, buckets)
	for k, value := range objects {
		entry := make([]byte, 0, len(k.namespace)+len(k.name)+2+len(value))
		entry = append(entry, k.namespace...)
		entry = append(entry, 0)
		entry = append(entry, k.name...)
		entry = append(entry, 0)
		entry = append(entry, value...)
		out[keyHash(k)&(buckets-1)] ^= xxh3.Hash(entry)
	}
	return out
}

// stateOf is what a synced agent saves.
func stateOf(a *agent) *savedState {
	s := &savedState{Epoch: a.report.Epoch, Revision: a.revision, Resources: map[string]*savedResource{}}
	for resource, objects := range a.store {
		info := a.infos[resource]
		kept := &savedResource{Fingerprint: info.fingerprint, DigestBuckets: info.digestBuckets}
		for k, v := range objects {
			kept.Objects = append(kept.Objects, savedObject{Namespace: k.namespace, Name: k.name, Value: v})
		}
		sort.Slice(kept.Objects, func(i, j int) bool {
			x, y := kept.Objects[i], kept.Objects[j]
			return x.Namespace < y.Namespace || (x.Namespace == y.Namespace && x.Name < y.Name)
		})
		s.Resources[resource] = kept
	}
	return s
}
