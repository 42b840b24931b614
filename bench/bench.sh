#!/usr/bin/env bash
# bench.sh runs one workload side by side on a plain directory, go-fuse's loopback (FUSE without
# encryption), gocryptfs and kmipfs (local store, embedded KMIP server), and prints a table with
# ratios. It is the gocryptfs benchmark workload: dd write and read of a 250 MiB file with
# bs=128k, untar of Go's source tree, md5sum of every file, ls -lR, rm -rf; plus SQLite inserts
# with one transaction per row. Run as root (it mounts and drops the page cache): make bench-fs.
#
# Environment: BENCH_DIR (scratch space, default a temp dir on /var/tmp), BENCH_ROUNDS (default 1),
# BENCH_SQLITE_ROWS (default 2000), KMIPFS (the binary, default bin/kmipfs).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
KMIPFS=${KMIPFS:-$root/bin/kmipfs}
ROWS=${BENCH_SQLITE_ROWS:-2000}
W=${BENCH_DIR:-$(mktemp -d /var/tmp/kmipfs-bench.XXXXXX)}
mkdir -p "$W"
pids=()
mounts=()

cleanup() {
	for m in "${mounts[@]}"; do fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
	for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[ -n "${BENCH_DIR:-}" ] || rm -rf "$W"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1 || { echo "bench: $1 is missing (make bench-fs installs it)"; exit 2; }; }
need gocryptfs; need sqlite3; need fusermount3
[ "$(id -u)" = 0 ] || { echo "bench: run as root (mounts, drop_caches)"; exit 2; }

dropcaches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

waitmount() {
	for _ in $(seq 1 200); do grep -q " $1 " /proc/mounts && return 0; sleep 0.05; done
	echo "bench: $1 did not mount"; exit 1
}

# Go's source tree as a tar file, made once.
tarball=$W/go-src.tar
[ -f "$tarball" ] || tar -C "$(go env GOROOT)" -cf "$tarball" src

# --- the four targets ---
mkdir -p "$W/plain" "$W/lo-back" "$W/lo-mnt" "$W/gc-cipher" "$W/gc-mnt"

go build -o "$W/loopback" github.com/hanwen/go-fuse/v2/example/loopback
"$W/loopback" "$W/lo-mnt" "$W/lo-back" >"$W/loopback.log" 2>&1 &
pids+=($!); mounts+=("$W/lo-mnt"); waitmount "$W/lo-mnt"

echo bench-password >"$W/gc-pass"
gocryptfs -q -nosyslog -init -passfile "$W/gc-pass" "$W/gc-cipher" >/dev/null
gocryptfs -q -nosyslog -passfile "$W/gc-pass" "$W/gc-cipher" "$W/gc-mnt"
mounts+=("$W/gc-mnt")

# kmipfs: the zero set-up demo (embedded KMIP server on loopback, local store), bucket "demo".
"$KMIPFS" demo "$W/k" >"$W/kmipfs.log" 2>&1 &
pids+=($!); mounts+=("$W/k/mnt")
for _ in $(seq 1 200); do grep -q "Press Ctrl-C" "$W/kmipfs.log" && break; sleep 0.05; done
waitmount "$W/k/mnt"

targets=(plain loopback gocryptfs kmipfs)
declare -A dirs=([plain]=$W/plain [loopback]=$W/lo-mnt [gocryptfs]=$W/gc-mnt [kmipfs]=$W/k/mnt/demo)
declare -A res

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l; }

run_target() {
	local t=$1 d=${dirs[$1]} s e
	# write: 2000 x 128 KiB = 250 MiB, fsync at the end so every target pays for durability.
	s=$(now); dd if=/dev/zero of="$d/zero" bs=131072 count=2000 conv=fsync status=none; e=$(now)
	res[$t,write]=$(echo "262.144 / $(secs "$s" "$e")" | bc -l)
	dropcaches
	s=$(now); dd if="$d/zero" of=/dev/null bs=131072 status=none; e=$(now)
	res[$t,read]=$(echo "262.144 / $(secs "$s" "$e")" | bc -l)
	rm -f "$d/zero"
	s=$(now); tar -xf "$tarball" -C "$d"; sync; e=$(now); res[$t,untar]=$(secs "$s" "$e")
	dropcaches
	s=$(now); (cd "$d" && find src -type f -print0 | xargs -0 md5sum >/dev/null); e=$(now); res[$t,md5]=$(secs "$s" "$e")
	dropcaches
	s=$(now); ls -lR "$d/src" >/dev/null; e=$(now); res[$t,ls]=$(secs "$s" "$e")
	s=$(now); rm -rf "$d/src"; e=$(now); res[$t,rm]=$(secs "$s" "$e")
	{
		echo "PRAGMA journal_mode=DELETE; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
		for i in $(seq 1 "$ROWS"); do echo "INSERT INTO t(v) VALUES('row $i of the benchmark');"; done
	} >"$W/sql.txt"
	rm -f "$d/bench.db"
	s=$(now)
	if sqlite3 -bail "$d/bench.db" <"$W/sql.txt" >/dev/null 2>"$W/sqlite-$t.err"; then
		e=$(now); res[$t,sqlite]=$(echo "$ROWS / $(secs "$s" "$e")" | bc -l)
	else
		echo "bench: sqlite3 failed on $t: $(head -1 "$W/sqlite-$t.err")" >&2
		res[$t,sqlite]=0
	fi
	rm -f "$d/bench.db" "$d/bench.db-journal"
}

for t in "${targets[@]}"; do
	echo "running $t ..." >&2
	run_target "$t"
done

cols=(write read untar md5 ls rm sqlite)
printf '\n%-10s %10s %10s %8s %8s %8s %8s %10s\n' "" "write MB/s" "read MB/s" "untar s" "md5 s" "ls-lR s" "rm-rf s" "sqlite tx/s"
for t in "${targets[@]}"; do
	printf '%-10s' "$t"
	for c in "${cols[@]}"; do
		case $c in write|read|sqlite) printf ' %10.0f' "${res[$t,$c]}" ;; *) printf ' %8.2f' "${res[$t,$c]}" ;; esac
	done
	echo
done
# Ratios: how kmipfs compares; >1 means kmipfs is better (higher throughput or less time).
for base in plain loopback gocryptfs; do
	printf '%-10s' "vs $base"
	for c in "${cols[@]}"; do
		case $c in
		write|read|sqlite) r=$(echo "${res[kmipfs,$c]} / (${res[$base,$c]} + 0.000001)" | bc -l) ;;
		*) r=$(echo "${res[$base,$c]} / (${res[kmipfs,$c]} + 0.000001)" | bc -l) ;;
		esac
		case $c in write|read|sqlite) printf ' %10.2fx' "$r" ;; *) printf ' %7.2fx' "$r" ;; esac
	done
	echo
done
echo "(ratios: kmipfs relative to the target; above 1.00x kmipfs is faster)"
