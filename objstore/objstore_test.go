package objstore_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/kmipfs/kmipfs/objstore"
)

func TestValidBucketName(t *testing.T) {
	tests := []struct {
		name     string
		wantRule string // a phrase of the failed rule; "" means valid
	}{
		{"abc", ""},
		{"my-bucket.2024", ""},
		{"0bucket9", ""},
		{"a-b", ""},
		{"a.b.c", ""},
		{strings.Repeat("a", 63), ""},
		{"192.168.5", ""},            // three numbers are not an address
		{"1.2.3.4a", ""},             // a letter makes it a name
		{"xn-abc", ""},               // only "xn--" is reserved
		{"abc-s3alia", ""},           // only the exact suffix is reserved
		{"my-s3alias-box", ""},       // the suffix must be at the end
		{"abcxn--", "start and end"}, // a trailing '-' fails, not the "xn--"
		{"", "1 to 63"},
		{"ab", ""},
		{"b1", ""},
		{strings.Repeat("a", 64), "1 to 63"},
		{"Bucket", "lowercase"},
		{"buck_et", "lowercase"},
		{"buck et", "lowercase"},
		{"a/b/c", "lowercase"},
		{"caf\u00e9", "lowercase"},
		{"abc\x00", "lowercase"},
		{"-abc", "start and end"},
		{"abc-", "start and end"},
		{".abc", "start and end"},
		{"abc.", "start and end"},
		{".tmp", "start and end"},
		{"a..b", `".."`},
		{"192.168.5.4", "IPv4"},
		{"999.999.999.999", "IPv4"},
		{"01.02.03.04", "IPv4"},
		{"xn--abc", `"xn--"`},
		{"bucket-s3alias", `"-s3alias"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := objstore.ValidBucketName(tc.name)
			if tc.wantRule == "" {
				if err != nil {
					t.Fatalf("ValidBucketName(%q) = %v, want nil", tc.name, err)
				}
				return
			}
			if !errors.Is(err, objstore.ErrInvalidBucketName) {
				t.Fatalf("ValidBucketName(%q) = %v, want ErrInvalidBucketName", tc.name, err)
			}
			if !strings.Contains(err.Error(), tc.wantRule) {
				t.Fatalf("ValidBucketName(%q) = %q, want the message to name the rule %q", tc.name, err, tc.wantRule)
			}
		})
	}
}

func TestValidKey(t *testing.T) {
	tests := []struct {
		key      string
		wantRule string // a phrase of the failed rule; "" means valid
	}{
		{"a", ""},
		{"0123456789abcdef0123456789abcdef/0000000000000001", ""},
		{"A-Z_a-z.0-9", ""},
		{"a/b/c/d/e", ""},
		{".hidden", ""},
		{"a/.b", ""},
		{"a/..b", ""},
		{"a/b..", ""},
		{"...", ""},
		{"-", ""},
		{strings.Repeat("k", objstore.MaxKeyLen), ""},
		{"", "empty"},
		{strings.Repeat("k", objstore.MaxKeyLen+1), "longer than 1024"},
		{"/a", "start with '/'"},
		{"/", "start with '/'"},
		{"a/", "empty path segment"},
		{"a//b", "empty path segment"},
		{".", `"." path segment`},
		{"..", `".." path segment`},
		{"a/./b", `"." path segment`},
		{"a/..", `".." path segment`},
		{"../etc/passwd", `".." path segment`},
		{"a b", "offset 1"},
		{"a\\b", "not one of"},
		{"a:b", "not one of"},
		{"a\x00", "0x00"},
		{"a\nb", "not one of"},
		{"caf\u00e9", "not one of"},
		{"a*", "not one of"},
		{"a+b", "not one of"},
	}
	for _, tc := range tests {
		name := tc.key
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			err := objstore.ValidKey(tc.key)
			if tc.wantRule == "" {
				if err != nil {
					t.Fatalf("ValidKey(%q) = %v, want nil", tc.key, err)
				}
				return
			}
			if !errors.Is(err, objstore.ErrInvalidKey) {
				t.Fatalf("ValidKey(%q) = %v, want ErrInvalidKey", tc.key, err)
			}
			if !strings.Contains(err.Error(), tc.wantRule) {
				t.Fatalf("ValidKey(%q) = %q, want the message to name the rule %q", tc.key, err, tc.wantRule)
			}
			if len(err.Error()) > 300 {
				t.Fatalf("ValidKey error is %d bytes long; a long key must be clipped in the message", len(err.Error()))
			}
		})
	}
}

func TestSentinelsAreDistinct(t *testing.T) {
	all := []error{
		objstore.ErrNotFound, objstore.ErrBucketNotFound, objstore.ErrBucketExists, objstore.ErrBucketNotEmpty,
		objstore.ErrInvalidBucketName, objstore.ErrInvalidKey, objstore.ErrNoSpace,
	}
	for i, a := range all {
		for j, b := range all {
			if i != j && errors.Is(a, b) {
				t.Errorf("errors.Is(%v, %v) is true; callers could not tell them apart", a, b)
			}
		}
	}
}
