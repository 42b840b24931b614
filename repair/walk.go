package repair

import (
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/kmipfs/kmipfs/meta"
)

// Secrets is the one method of the KMIP side that repair calls; *kms.Cache and *kms.Client have
// it. The caller owns (and repair zeroes) the returned secret.
type Secrets interface {
	Secret(ctx context.Context, name string) ([]byte, error)
}

// Resolve returns the inode at p, a path relative to the mount root such as "/bucket/dir" (a
// leading "/" is optional; "" and "/" are the root). A missing component is meta.ErrNotFound.
func Resolve(ctx context.Context, db *meta.DB, p string) (*meta.Inode, string, error) {
	clean := path.Clean("/" + p)
	in, err := db.Get(ctx, meta.RootIno)
	if err != nil {
		return nil, "", err
	}
	if clean == "/" {
		return in, clean, nil
	}
	for _, name := range strings.Split(clean[1:], "/") {
		if !in.IsDir() {
			return nil, "", fmt.Errorf("resolve %s: %s is not a directory: %w", clean, name, meta.ErrNotDir)
		}
		next, err := db.Lookup(ctx, in.Ino, name)
		if err != nil {
			return nil, "", fmt.Errorf("resolve %s: %w", clean, err)
		}
		in = next
	}
	return in, clean, nil
}

// walk calls fn for start (whose path is p) and every inode below it, depth first, each directory
// before its entries, in name order. A file with several names is passed once per name; callers
// that must see it once keep their own set. A directory that vanishes during the walk is skipped.
func walk(ctx context.Context, db *meta.DB, start *meta.Inode, p string, fn func(p string, in *meta.Inode) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := fn(p, start); err != nil {
		return err
	}
	if !start.IsDir() {
		return nil
	}
	ents, err := db.ReadDir(ctx, start.Ino)
	if err != nil {
		return err
	}
	for _, d := range ents {
		in, err := db.Get(ctx, d.Ino)
		if err != nil {
			return fmt.Errorf("entry %s: %w", path.Join(p, d.Name), err)
		}
		if err := walk(ctx, db, in, path.Join(p, d.Name), fn); err != nil {
			return err
		}
	}
	return nil
}

// blockList formats sorted block numbers compactly: "1, 5-7, 9".
func blockList(blocks []uint64) string {
	var b strings.Builder
	for i := 0; i < len(blocks); {
		j := i
		for j+1 < len(blocks) && blocks[j+1] == blocks[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		if i == j {
			fmt.Fprintf(&b, "%d", blocks[i])
		} else {
			fmt.Fprintf(&b, "%d-%d", blocks[i], blocks[j])
		}
		i = j + 1
	}
	return b.String()
}
