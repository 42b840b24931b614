// Command loopback is the benchmark's "FUSE without encryption" baseline: go-fuse's loopback file
// system (the example/loopback program, with its libfuse-compatible 1 s entry and attribute
// timeouts), except that it does not use FUSE passthrough unless asked to.
//
// go-fuse's LoopbackFile offers its file descriptor for passthrough (FOPEN_PASSTHROUGH), which
// the kernel (6.9 and later) takes when the daemon runs as root: reads and writes of an open file
// then go straight to the backing file and never reach the daemon. That measures the backing
// file system, not FUSE, and no encrypting file system can use it, so the baseline that says what
// a FUSE round trip costs must turn it off. -passthrough turns it back on for comparison.
//
// Usage: loopback [-passthrough] MOUNTPOINT ORIGINAL
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// node is a LoopbackNode whose open files hide their passthrough file descriptor.
type node struct {
	*fs.LoopbackNode
}

var (
	_ fs.NodeWrapChilder = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeCreater     = (*node)(nil)
)

// WrapChild makes every node of the tree a node, so that all of them hide passthrough.
func (n *node) WrapChild(_ context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{ops.(*fs.LoopbackNode)}
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags)
	return wrap(fh), fuseFlags, errno
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	in, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	return in, wrap(fh), fuseFlags, errno
}

// file lists the interfaces of fs.LoopbackFile that the benchmark's programs use, leaving out
// fs.FilePassthroughFder. Embedding this interface, rather than the concrete type, is what keeps
// PassthroughFd from being promoted.
type file interface {
	fs.FileReleaser
	fs.FileGetattrer
	fs.FileReader
	fs.FileWriter
	fs.FileGetlker
	fs.FileSetlker
	fs.FileSetlkwer
	fs.FileLseeker
	fs.FileFlusher
	fs.FileFsyncer
	fs.FileSetattrer
	fs.FileAllocater
}

type noPassthrough struct{ file }

func wrap(fh fs.FileHandle) fs.FileHandle {
	if f, ok := fh.(file); ok {
		return noPassthrough{f}
	}
	return fh
}

func main() {
	passthrough := flag.Bool("passthrough", false, "let the kernel read and write the backing files directly (FUSE passthrough)")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: loopback [-passthrough] MOUNTPOINT ORIGINAL")
		os.Exit(2)
	}
	root, err := fs.NewLoopbackRoot(flag.Arg(1))
	if err != nil {
		fmt.Fprintf(os.Stderr, "loopback: %v\n", err)
		os.Exit(1)
	}
	if !*passthrough {
		root = &node{root.(*fs.LoopbackNode)}
	}
	sec := time.Second
	server, err := fs.Mount(flag.Arg(0), root, &fs.Options{
		AttrTimeout:     &sec,
		EntryTimeout:    &sec,
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			FsName: flag.Arg(1),
			Name:   "loopback",
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "loopback: mount %s: %v\n", flag.Arg(0), err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		server.Unmount()
	}()
	server.Wait()
}
