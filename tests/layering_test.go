package tests

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering enforces the dependency direction of docs/ARCHITECTURE.md: the leaf packages
// (crypt, kms, meta, objstore) import no other kmipfs package outside their own subtree, only fs
// and cmd join them, and only fs imports go-fuse.
func TestLayering(t *testing.T) {
	const mod = "github.com/kmipfs/kmipfs/"
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", "../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	leaves := []string{"crypt", "kms", "meta", "objstore"}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg, imports := strings.TrimPrefix(f[0], mod), f[1:]
		top, _, _ := strings.Cut(pkg, "/")
		for _, imp := range imports {
			// bench/loopback is the unencrypted FUSE baseline of make bench, not part of kmipfs.
			if strings.HasPrefix(imp, "github.com/hanwen/go-fuse") && top != "fs" && top != "cmd" && pkg != "bench/loopback" {
				t.Errorf("%s imports %s: only fs (and cmd for the server type) may use go-fuse", pkg, imp)
			}
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			dep := strings.TrimPrefix(imp, mod)
			depTop, _, _ := strings.Cut(dep, "/")
			for _, leaf := range leaves {
				if top == leaf && depTop != leaf {
					t.Errorf("%s imports %s: leaf packages must not import other kmipfs packages", pkg, imp)
				}
			}
			if top == "fs" && depTop == "cmd" {
				t.Errorf("%s imports %s: fs must not import cmd", pkg, imp)
			}
		}
	}
}
