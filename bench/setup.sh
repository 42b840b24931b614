#!/usr/bin/env bash
# setup.sh installs the programs bench.sh needs, from Debian packages, when they are missing, so
# that `make bench` runs on a fresh machine. It is idempotent and quick when everything is there.
# curl is only needed for BENCH_PPROF=1 (it fetches the daemon's CPU profiles); rclone only for
# the S3 column (bench/s3.sh), which also needs versitygw (`make setup-s3`, a Go install, not apt).
set -euo pipefail

# PACKAGE:COMMAND-IT-PROVIDES
want=(fio:fio gocryptfs:gocryptfs sqlite3:sqlite3 python3:python3 fuse3:fusermount3 curl:curl rclone:rclone)

missing=()
for p in "${want[@]}"; do
	command -v "${p#*:}" >/dev/null 2>&1 || missing+=("${p%%:*}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "bench: missing ${missing[*]}; run as root (the benchmark mounts and drops the page cache)" >&2
	exit 2
fi
echo "bench: installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
