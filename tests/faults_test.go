package tests

// Harness pieces for the fault tests (outage, ENOSPC, tamper): decorating the mount's store and
// choosing where the local store lives.

import (
	"os"
	"testing"

	"github.com/kmipfs/kmipfs/objstore"
)

// storeWrapper decorates the store of a mount (see withStore).
type storeWrapper func(objstore.Store) objstore.Store

// withStore decorates the store with wrap at every mount, e.g. with a faulty.Store.
func withStore(wrap storeWrapper) envOption { return func(e *env) { e.wrapStore = wrap } }

// withStoreDir keeps the local store in dir (e.g. a small tmpfs) instead of below the test's
// temporary directory.
func withStoreDir(dir string) envOption { return func(e *env) { e.storeDir = dir } }

// requireLocalStore skips a test that edits or sizes the local store's files when the tests run
// against another backend (KMIPFS_TEST_STORE=s3).
func requireLocalStore(t *testing.T) {
	t.Helper()
	if k := os.Getenv("KMIPFS_TEST_STORE"); k != "" && k != "local" {
		t.Skipf("needs the local store's files (KMIPFS_TEST_STORE=%s)", k)
	}
}
