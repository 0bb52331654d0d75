package embedded

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// On disk, registry.db holds three buckets:
//
//	meta       "schema" → schemaVersion
//	vips       <vip> → JSON registry.VIP (policy normalized)
//	instances  <vip>/<id> → JSON registry.Instance
//
// VIP names cannot contain '/', so the instance key splits unambiguously and
// a VIP's instances are contiguous. Heartbeats are not written: RenewedAt on
// disk is whatever it was at the last register or status change, and Open
// replaces it (see restart grace in the package comment).
var (
	bucketMeta      = []byte("meta")
	bucketVIPs      = []byte("vips")
	bucketInstances = []byte("instances")
	keySchema       = []byte("schema")
)

const (
	schemaVersion = "1"
	dbFile        = "registry.db"
	// lockTimeout bounds the wait for the file lock held by another process.
	lockTimeout = time.Second
)

// openDB checks, opens or creates <dir>/registry.db and its buckets (see
// integrity.go for the checks). bbolt keeps its default of fsyncing every
// commit, which is what makes an acknowledged write survive kill -9.
func openDB(dir string, evidence []string) (*bolt.DB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded: create data directory: %w", err)
	}
	path := filepath.Join(dir, dbFile)
	if err := checkFile(path, evidence); err != nil {
		return nil, err
	}
	var db *bolt.DB
	err := guard(func() (err error) {
		db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
		return err
	})
	var pathErr *fs.PathError
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("embedded: data directory %s is in use by another meshd? (no lock on %s after %s): %w",
			dir, path, lockTimeout, err)
	case errors.As(err, &pathErr):
		return nil, fmt.Errorf("embedded: open %s: %w", path, err)
	case err != nil:
		return nil, damaged(path, fmt.Errorf("cannot be opened: %w", err))
	}
	if err := guard(func() error { return verify(db) }); err != nil {
		closeUnlessPanicked(db, err)
		return nil, damaged(path, fmt.Errorf("fails a consistency check: %w", err))
	}
	if err := initBuckets(db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("embedded: initialise %s: %w", path, err)
	}
	return db, nil
}

// closeUnlessPanicked closes db unless err is a storage panic, after which
// bbolt may still hold locks that Close would wait for.
func closeUnlessPanicked(db *bolt.DB, err error) {
	var p *storagePanic
	if !errors.As(err, &p) {
		_ = db.Close()
	}
}

// initBuckets creates the buckets and the schema version of a new file,
// and refuses a file of another schema version.
func initBuckets(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketVIPs, bucketInstances} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		switch v := meta.Get(keySchema); {
		case v == nil:
			return meta.Put(keySchema, []byte(schemaVersion))
		case string(v) != schemaVersion:
			return fmt.Errorf("schema version %q, this meshd reads %q", v, schemaVersion)
		}
		return nil
	})
}

// loadState reads every VIP and instance into memory, giving each instance
// a fresh lease that starts at now.
func loadState(db *bolt.DB, now time.Time) (map[string]*vipState, []registry.Instance, error) {
	vips := make(map[string]*vipState)
	var orphans []registry.Instance
	err := db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketVIPs).ForEach(func(k, v []byte) error {
			var vip registry.VIP
			if err := json.Unmarshal(v, &vip); err != nil {
				return fmt.Errorf("vip %q: %w", k, err)
			}
			// Stored policies are normalized; normalizing again keeps
			// them and leaves Explicit naming only their meaningful zeros.
			vip.Policy = vip.Policy.Normalize()
			vips[vip.Name] = &vipState{vip: vip, instances: make(map[string]registry.Instance)}
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketInstances).ForEach(func(k, v []byte) error {
			var inst registry.Instance
			if err := json.Unmarshal(v, &inst); err != nil {
				return fmt.Errorf("instance %q: %w", k, err)
			}
			inst.RenewedAt = now
			vs, ok := vips[inst.VIP]
			if !ok {
				orphans = append(orphans, inst)
				return nil
			}
			vs.instances[inst.ID] = inst
			return nil
		})
	})
	if err != nil {
		return nil, nil, err
	}
	return vips, orphans, nil
}

func instanceKey(vip, id string) []byte { return []byte(vip + "/" + id) }

func putVIP(tx *bolt.Tx, v registry.VIP) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketVIPs).Put([]byte(v.Name), b)
}

func putInstance(tx *bolt.Tx, inst registry.Instance) error {
	b, err := marshalInstance(inst)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketInstances).Put(instanceKey(inst.VIP, inst.ID), b)
}

// marshalInstance is an instance as stored.
func marshalInstance(inst registry.Instance) ([]byte, error) { return json.Marshal(inst) }
