package crypt_test

import (
	"errors"
	"fmt"

	"github.com/kmipfs/kmipfs/crypt"
)

// Example shows the life of one file: a fresh id and DEK, the DEK wrapped under the KMIP secret for
// meta, one block sealed for the object store, and both read back.
func Example() {
	kek := make([]byte, crypt.KeySize) // in kmipfs: the secret kms fetched for the key name
	const keyName = "pykmip-mybucketkey"

	id, err := crypt.NewFileID()
	if err != nil {
		panic(err)
	}
	dek, err := crypt.NewDataKey()
	if err != nil {
		panic(err)
	}
	wrapped, err := crypt.WrapKey(kek, dek, id, keyName) // stored in meta with the file
	if err != nil {
		panic(err)
	}
	c, err := crypt.NewCipher(dek, id)
	if err != nil {
		panic(err)
	}
	crypt.Zero(dek)
	defer c.Destroy()

	const block, gen = 0, 1 // meta records both with the extent
	object := c.SealBlock(nil, []byte("hello"), block, gen)
	fmt.Println("sealed bytes:", len(object), "wrapped key bytes:", len(wrapped))

	// Later, after a remount: unwrap with the secret, open the block meta points at.
	dek2, err := crypt.UnwrapKey(kek, wrapped, id, keyName)
	if err != nil {
		panic(err)
	}
	c2, err := crypt.NewCipher(dek2, id)
	if err != nil {
		panic(err)
	}
	crypt.Zero(dek2)
	plain, err := c2.OpenBlock(nil, object, block, gen) // zero-padded to PlainBS; meta knows the size
	if err != nil {
		panic(err)
	}
	fmt.Printf("plaintext: %q, %d bytes\n", plain[:5], len(plain))

	// The store replays the block where meta expects a newer generation.
	_, err = c2.OpenBlock(nil, object, block, gen+1)
	fmt.Println("replayed block is ErrAuth:", errors.Is(err, crypt.ErrAuth))
	// Output:
	// sealed bytes: 4124 wrapped key bytes: 61
	// plaintext: "hello", 4096 bytes
	// replayed block is ErrAuth: true
}
