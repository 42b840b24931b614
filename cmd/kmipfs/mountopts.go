package main

import (
	"fmt"
	"path/filepath"
	"strings"
)

// mountOptions is what a mount's -o OPTIONS asks for: the options of mount(8) and /etc/fstab.
type mountOptions struct {
	kernel             []string // enforced by the kernel (ro, noatime, nosuid, ...): fs.MountOptions.KernelOptions
	allowOther         bool     // allow_other: overrides [fs] allow_other
	defaultPermissions bool     // default_permissions: overrides [fs] default_permissions
	debug              bool     // debug: as --debug
	logLevel           string   // log_level=LEVEL: as --log-level
	logFile            string   // log_file=PATH: as --log-file
}

// kernelMountOptions are passed to the kernel as they are: it enforces them (ro refuses writes with
// EROFS, noatime stops atime updates, ...), so kmipfs needs no code of its own for them.
var kernelMountOptions = map[string]bool{
	"ro": true, "rw": true, "sync": true, "async": true, "dirsync": true,
	"atime": true, "noatime": true, "diratime": true, "nodiratime": true,
	"relatime": true, "norelatime": true, "strictatime": true, "lazytime": true, "nolazytime": true,
	"suid": true, "nosuid": true, "dev": true, "nodev": true, "exec": true, "noexec": true,
}

// ignoredMountOptions are meant for mount(8), systemd or the fstab reader, not for the filesystem.
var ignoredMountOptions = map[string]bool{
	"defaults": true, "auto": true, "noauto": true, "user": true, "nouser": true, "users": true,
	"owner": true, "group": true, "nofail": true, "_netdev": true,
}

// parseMountOptions parses a comma-separated -o list (several -o are joined with commas before).
// An option kmipfs does not know is an error, unless sloppy (mount -s) is set: a typo such as
// "noatme" must not mount with a setting the user did not ask for.
func parseMountOptions(s string, sloppy bool) (mountOptions, []string, error) {
	var mo mountOptions
	var skipped []string
	for _, o := range strings.Split(s, ",") {
		name, value, hasValue := strings.Cut(o, "=")
		switch {
		case o == "":
		case kernelMountOptions[o]:
			mo.kernel = append(mo.kernel, o)
		case ignoredMountOptions[o], strings.HasPrefix(o, "x-"), strings.HasPrefix(o, "X-"),
			strings.HasPrefix(o, "comment="):
		case o == "allow_other":
			mo.allowOther = true
		case o == "default_permissions":
			mo.defaultPermissions = true
		case o == "debug":
			mo.debug = true
		case name == "log_level" && hasValue:
			if _, err := parseLevel(value); err != nil {
				return mo, nil, fmt.Errorf("mount option %s: %v", o, err)
			}
			mo.logLevel = value
		case name == "log_file" && hasValue:
			if !filepath.IsAbs(value) {
				return mo, nil, fmt.Errorf("mount option %s: the log file must be an absolute path", o)
			}
			mo.logFile = value
		case name == "uid" || name == "gid":
			// FUSE's uid=/gid= make every file appear owned by one user; kmipfs keeps each file's
			// real owner, which POSIX applications (and default_permissions) rely on.
			return mo, nil, fmt.Errorf("mount option %s: kmipfs keeps each file's own owner and group; "+
				"to let other users in, use allow_other (the kernel still checks mode bits)", o)
		case sloppy:
			skipped = append(skipped, o)
		default:
			return mo, nil, fmt.Errorf("unknown mount option %q (kmipfs mount --help lists the options)", o)
		}
	}
	return mo, skipped, nil
}

const mountOptionsHelp = `Mount options (-o, comma-separated, as in /etc/fstab):
  ro, rw, noatime, atime, relatime, strictatime, nodiratime, lazytime, sync, dirsync,
  nosuid, suid, nodev, dev, noexec, exec    enforced by the kernel
  allow_other                               let other users use the mount (as [fs] allow_other)
  default_permissions                       the kernel checks mode bits (as [fs] default_permissions)
  debug                                     as --debug
  log_level=LEVEL                           as --log-level
  log_file=PATH                             as --log-file
  defaults, auto, noauto, user, users, nofail, _netdev, x-*, comment=*
                                            for mount(8) and systemd; ignored
  uid=, gid= are refused: kmipfs keeps each file's owner. Any other option is an error.
`
