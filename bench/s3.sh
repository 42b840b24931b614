#!/usr/bin/env bash
# s3.sh is the S3 column of the benchmark: kmipfs with backend "s3" side by side with rclone's crypt
# remote (rclone mount, --vfs-cache-mode writes), both on ONE versitygw server on loopback, in one
# run, for the same workload. Each row runs on both targets before the next row starts. It prints one
# table with the ratio kmipfs-s3/rclone-crypt per row (above 1.00x kmipfs is better) and writes it,
# with the machine description, as markdown to $BENCH_OUT for docs/PERFORMANCE.md.
#
# Durability differs, so the write rows are measured twice (docs/PERFORMANCE.md, section S3, says
# why): "until it returns" is what the application sees; "until on the server" also waits until
# rclone's VFS cache has no upload in progress or queued (rclone rc vfs/stats). kmipfs uploads on
# close and fsync itself, so for it the two are the same wait. rclone runs with --vfs-write-back 0s,
# so its uploads start at close instead of 5 s later.
#
# Cold rows (dd read, md5sum, ls -lRA, fio random read) remount both file systems and drop the page
# cache first, so neither daemon serves from memory: rclone's directory cache and kmipfs's caches
# start empty, and versitygw reads its files from disk.
#
# Run as root; `make bench-s3` installs the tools (bench/setup.sh, make setup-s3) and builds
# bin/kmipfs. Environment:
#   BENCH_QUICK=1        small sizes, one to two minutes: for trying the script, not for numbers
#   BENCH_DIR            scratch space (kept afterwards); default a temp dir on /var/tmp (removed)
#   BENCH_OUT            the markdown table; default bench/results-s3-latest.md
#   KMIPFS               the binary (default bin/kmipfs)
#   VERSITYGW            the S3 server (default versitygw on $PATH, else $(go env GOPATH)/bin/versitygw)

# One brace group, parsed whole before it runs, as bench.sh.
{
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
root=$(pwd)
KMIPFS=${KMIPFS:-$root/bin/kmipfs}
OUT=${BENCH_OUT:-$root/bench/results-s3-latest.md}
VERSITYGW=${VERSITYGW:-$(command -v versitygw || echo "$(go env GOPATH)/bin/versitygw")}

if [ "${BENCH_QUICK:-0}" = 1 ]; then
	mode=quick DD_MIB=32 TAR_DIR=src/go FIO_RAND_MIB=16 FIO_RAND_S=2
else
	mode=full DD_MIB=250 TAR_DIR=src FIO_RAND_MIB=64 FIO_RAND_S=10
fi

# rclone's S3 client (aws-sdk-go v1) refuses to start when AWS_CA_BUNDLE is set and its transport is
# rclone's own ("LoadCustomCABundleError"); the server is plain http on loopback, so drop it.
rclone() { env -u AWS_CA_BUNDLE rclone "$@"; }

need() { command -v "$1" >/dev/null 2>&1 || { echo "bench-s3: $1 is missing (bench/setup.sh installs it)" >&2; exit 2; }; }
need rclone; need fio; need python3; need fusermount3; need go; need setfattr
[ -x "$VERSITYGW" ] || { echo "bench-s3: versitygw is not installed (make setup-s3)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "bench-s3: run as root (mounts, drop_caches)" >&2; exit 2; }
[ -x "$KMIPFS" ] || { echo "bench-s3: $KMIPFS is not built (make build)" >&2; exit 2; }

keep=${BENCH_DIR:+1}
W=${BENCH_DIR:-$(mktemp -d /var/tmp/kmipfs-bench-s3.XXXXXX)}
mkdir -p "$W"
W=$(cd "$W" && pwd)
RES=$W/results.tsv
: >"$RES"
# Every run starts from an empty server, key store, metadata and rclone cache (a kept BENCH_DIR
# keeps only the tarball).
rm -rf "$W/s3" "$W/kms" "$W/k-meta" "$W/rc-cache"
declare -A pid_of mnt_of dirs

# cleanup unmounts and stops every daemon; it keeps the scratch directory, with its logs, when
# BENCH_DIR asked for it or when the run failed.
cleanup() {
	local rc=$? t
	for t in kmipfs-s3 rclone-crypt; do
		[ -n "${mnt_of[$t]:-}" ] || continue
		fusermount3 -u "${mnt_of[$t]}" 2>/dev/null || fusermount3 -u -z "${mnt_of[$t]}" 2>/dev/null || true
	done
	for t in "${!pid_of[@]}"; do kill -INT "${pid_of[$t]}" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ -z "$keep" ] && [ "$rc" = 0 ]; then rm -rf "$W"; else echo "bench-s3: scratch data kept in $W" >&2; fi
}
trap cleanup EXIT

# freeport: a free TCP port on loopback (the kernel's pick; taken again a moment later, as s3test does).
freeport() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- the machine, recorded with the results ---
dev=$(df -P "$W" | awk 'NR == 2 { print $1 }')
disk=$(lsblk -no PKNAME "$dev" 2>/dev/null | head -1)
[ -n "$disk" ] || disk=$(basename "$dev")
{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "load before the run: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min; $(nproc) cores)"
	echo "kmipfs: $("$KMIPFS" --version 2>/dev/null || git describe --always --dirty 2>/dev/null || echo unknown)"
	echo "cpu: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
	echo "memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
	echo "disk: $(lsblk -d -n -o NAME,ROTA,MODEL "/dev/$disk" 2>/dev/null | awk '{ $2 = ($2 == 1 ? "rotational" : "non-rotational"); print }' || echo "$dev") (as the kernel reports it; versitygw's directory and rclone's VFS cache are on $(df -P "$W" | awk 'NR == 2 { print $6 }'))"
	echo "kernel: $(uname -r)"
	echo "S3 server: versitygw $(go version -m "$VERSITYGW" 2>/dev/null | awk '$1 == "mod" { print $3 }') (posix backend, http on loopback)"
	echo "rclone: $(rclone version | head -1 | cut -d' ' -f2) (crypt over s3, mount --vfs-cache-mode writes --vfs-write-back 0s, other options default)"
	echo "fio: $(fio --version)"
	echo "go: $(go env GOVERSION)"
	echo "mode: $mode (dd $DD_MIB MiB, untar of Go's $TAR_DIR, fio random 4k on a $FIO_RAND_MIB MiB file, writes for ${FIO_RAND_S}s)"
} >"$W/machine.txt"
cat "$W/machine.txt" >&2

dropcaches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# waitmount DIR PID: waits up to 30 s for the daemon PID to mount DIR.
waitmount() {
	for _ in $(seq 1 600); do
		grep -q " $1 " /proc/mounts && return 0
		kill -0 "$2" 2>/dev/null || { echo "bench-s3: the daemon for $1 exited; see the logs in $W" >&2; exit 1; }
		sleep 0.05
	done
	echo "bench-s3: $1 did not mount within 30 s; see the logs in $W" >&2
	exit 1
}

# unmount TARGET: unmounts the target and waits for its daemon to exit.
unmount() {
	local m=${mnt_of[$1]} p=${pid_of[$1]}
	fusermount3 -u "$m" || { echo "bench-s3: cannot unmount $m (busy?)" >&2; return 1; }
	for _ in $(seq 1 600); do
		kill -0 "$p" 2>/dev/null || break
		sleep 0.05
	done
	wait "$p" 2>/dev/null || true
}

tarball=$W/go-${TAR_DIR//\//-}.tar
[ -f "$tarball" ] || tar -C "$(go env GOROOT)" -cf "$tarball" "$TAR_DIR"
files_in_tar=$(tar -tf "$tarball" | grep -vc '/$')

# --- the S3 server, shared by both targets ---
AK=benchaccess SK=benchsecret-benchsecret
s3port=$(freeport)
endpoint=http://127.0.0.1:$s3port
mkdir -p "$W/s3"
"$VERSITYGW" --access "$AK" --secret "$SK" --port "127.0.0.1:$s3port" --quiet posix "$W/s3" >"$W/versitygw.log" 2>&1 &
pid_of[versitygw]=$!
for _ in $(seq 1 300); do
	python3 -c 'import sys, urllib.request, urllib.error
try: urllib.request.urlopen(sys.argv[1], timeout=1)
except urllib.error.HTTPError: pass' "$endpoint/" 2>/dev/null && break
	kill -0 "${pid_of[versitygw]}" 2>/dev/null || { echo "bench-s3: versitygw exited; see $W/versitygw.log" >&2; exit 1; }
	sleep 0.05
done

# --- kmipfs: the embedded KMIP server (as bench.sh's demo uses), an s3 store on versitygw ---
"$KMIPFS" kms serve --dir "$W/kms" --addr 127.0.0.1:0 >"$W/kms.out" 2>"$W/kms.log" &
pid_of[kms]=$!
for _ in $(seq 1 200); do grep -q 'client_key' "$W/kms.out" && break; sleep 0.05; done
kmsaddr=$(sed -n 's/^KMIP server listening on //p' "$W/kms.out")
[ -n "$kmsaddr" ] || { echo "bench-s3: kmipfs kms serve did not start; see $W/kms.log" >&2; exit 1; }
printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$AK" "$SK" >"$W/s3-credentials"
chmod 600 "$W/s3-credentials"
# kms serve prints the address and the certificate paths (quoted, as TOML takes them).
kmsfile() { sed -n "s/^ *$1 *= *//p" "$W/kms.out"; }
cat >"$W/kmipfs.toml" <<-EOF
	[kms]
	addr = "$kmsaddr"
	ca_path = $(kmsfile ca_path)
	client_cert = $(kmsfile client_cert)
	client_key = $(kmsfile client_key)
	[store]
	backend = "s3"
	endpoint = "$endpoint"
	path_style = true
	bucket_prefix = "kfs-"
	credentials_file = "$W/s3-credentials"
	[meta]
	path = "$W/k-meta"
EOF
"$KMIPFS" key create --config "$W/kmipfs.toml" bench-key >"$W/key.log" 2>&1 ||
	{ echo "bench-s3: kmipfs key create failed: $(tail -1 "$W/key.log")" >&2; exit 1; }
mnt_of[kmipfs-s3]=$W/k-mnt
dirs[kmipfs-s3]=$W/k-mnt/bench
mkdir -p "$W/k-mnt"
start_kmipfs() {
	"$KMIPFS" mount --config "$W/kmipfs.toml" "$W/k-mnt" >>"$W/kmipfs.log" 2>&1 &
	pid_of[kmipfs-s3]=$!
	waitmount "$W/k-mnt" "${pid_of[kmipfs-s3]}"
}
start_kmipfs
mkdir -p "$W/k-mnt/bench"
setfattr -n user.kmipfs.key-id -v bench-key "$W/k-mnt/bench"

# --- rclone: crypt remote over an s3 remote on the same versitygw ---
rcport=$(freeport)
cat >"$W/rclone.conf" <<-EOF
	[vgw]
	type = s3
	provider = Other
	access_key_id = $AK
	secret_access_key = $SK
	endpoint = $endpoint
	region = us-east-1
	force_path_style = true

	[secret]
	type = crypt
	remote = vgw:rclone-bench
	password = $(rclone obscure bench-password)
EOF
chmod 600 "$W/rclone.conf"
rclone --config "$W/rclone.conf" mkdir vgw:rclone-bench
mnt_of[rclone-crypt]=$W/rc-mnt
dirs[rclone-crypt]=$W/rc-mnt
mkdir -p "$W/rc-mnt"
start_rclone() {
	rclone --config "$W/rclone.conf" mount secret: "$W/rc-mnt" --vfs-cache-mode writes --vfs-write-back 0s \
		--cache-dir "$W/rc-cache" --rc --rc-addr "127.0.0.1:$rcport" --rc-no-auth \
		--log-file "$W/rclone.log" --log-level NOTICE &
	pid_of[rclone-crypt]=$!
	waitmount "$W/rc-mnt" "${pid_of[rclone-crypt]}"
}
start_rclone

targets=(kmipfs-s3 rclone-crypt)
declare -A bucket_of=([kmipfs-s3]=kfs-bench [rclone-crypt]=rclone-bench)

# onserver TARGET: returns when everything written through TARGET is on the S3 server. kmipfs
# uploaded it before close and fsync returned; rclone's VFS cache uploads in the background, so
# this waits until its cache has no upload in progress or queued (polled every 20 ms), and fails
# if an upload failed.
onserver() {
	[ "$1" = rclone-crypt ] || return 0
	local st
	while :; do
		st=$(rclone rc --url "http://127.0.0.1:$rcport/" vfs/stats)
		python3 -c '
import json, sys
c = json.loads(sys.argv[1])["diskCache"]
if c.get("erroredFiles"):
    sys.exit("rclone: %d uploads failed" % c["erroredFiles"])
sys.exit(0 if c["uploadsInProgress"] == 0 and c["uploadsQueued"] == 0 else 3)' "$st" && return 0
		[ $? = 3 ] || return 1
		sleep 0.02
	done
}

# cold: remounts both targets (nothing written may still be on its way) and drops the page cache.
cold() {
	local t
	for t in "${targets[@]}"; do onserver "$t"; unmount "$t"; done
	# Everything is uploaded, so rclone's on-disk cache holds nothing the server lacks: empty it,
	# so that no read can come from it (in writes mode rclone reads through it only while a file
	# is open for writing, but this makes sure).
	rm -rf "$W/rc-cache"
	start_kmipfs
	start_rclone
	dropcaches
}

# --- measuring, as bench.sh ---
elapsed() { awk -v s="$1" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.4f\n", e - s }'; }
rate() { awk -v a="$1" -v s="$2" 'BEGIN { printf "%.4f\n", a / s }'; }
mbps() { awk -v a="$1" -v s="$2" 'BEGIN { printf "%.4f\n", a / 1e6 / s }'; }
defrow() { printf 'row\t%s\t%s\t%s\t%s\t-\n' "$@" >>"$RES"; }
val() { printf 'val\t%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RES"; }

# allnum N VALUE...: true if there are N values and each is a number.
allnum() {
	local n=$1 v
	shift
	[ $# = "$n" ] || return 1
	for v in "$@"; do [[ $v =~ ^[0-9]+(\.[0-9]+)?$ ]] || return 1; done
}

# run FUNC [ROW...]: runs FUNC DIR TARGET on each target; FUNC prints one number per ROW, one a
# line, on stdout (the last lines count), and they are recorded in that order. A failure records
# "fail" for every ROW, with one line naming the log, and the run goes on.
run() {
	local fn=$1 t i v
	shift
	local rows=("$@") vs=()
	for t in "${targets[@]}"; do
		echo "bench-s3: $fn on $t" >&2
		"$fn" "${dirs[$t]}" "$t" >"$W/$fn-$t.out" 2>"$W/$fn-$t.err" &
		if wait $! && mapfile -t vs < <(tail -n ${#rows[@]} "$W/$fn-$t.out") && allnum "${#rows[@]}" "${vs[@]}"; then
			for i in "${!rows[@]}"; do val "${rows[$i]}" "$t" "${vs[$i]}"; done
		else
			echo "bench-s3: $fn failed on $t: $(tail -1 "$W/$fn-$t.err") (log: $W/$fn-$t.err)" >&2
			for i in "${!rows[@]}"; do val "${rows[$i]}" "$t" fail; done
		fi
	done
}

# --- the workloads ---
# dd_write prints MB/s until dd (with conv=fsync) returns, then until the data is on the server.
dd_write() {
	local s=$EPOCHREALTIME a
	dd if=/dev/zero of="$1/zero" bs=131072 count=$((DD_MIB * 8)) conv=fsync status=none
	a=$(elapsed "$s")
	onserver "$2"
	mbps $((DD_MIB * 1048576)) "$a"
	mbps $((DD_MIB * 1048576)) "$(elapsed "$s")"
}
dd_read() {
	local s=$EPOCHREALTIME
	dd if="$1/zero" of=/dev/null bs=131072 status=none
	mbps $((DD_MIB * 1048576)) "$(elapsed "$s")"
	rm -f "$1/zero"
}
# untar prints the seconds until tar and sync return, then until the files are on the server.
untar() {
	local s=$EPOCHREALTIME
	tar -xf "$tarball" -C "$1"
	sync
	elapsed "$s"
	onserver "$2"
	elapsed "$s"
}
md5() {
	local s=$EPOCHREALTIME n
	n=$(cd "$1" && find "$TAR_DIR" -type f -print0 | xargs -0 md5sum | wc -l)
	[ "$n" = "$files_in_tar" ] || { echo "md5sum saw $n files, the tar has $files_in_tar" >&2; return 1; }
	elapsed "$s"
}
lslr() {
	local s=$EPOCHREALTIME n
	n=$(ls -lRA "$1/$TAR_DIR" | grep -c "^-")
	[ "$n" = "$files_in_tar" ] || { echo "ls -lRA listed $n files, the tar has $files_in_tar" >&2; return 1; }
	elapsed "$s"
}
# rmrf prints the seconds until rm returns, then until the target's bucket on the server holds
# no object (versitygw keeps each object as a file under its bucket's directory): kmipfs deletes
# the objects of removed files in the background after the metadata commit, rclone deletes each
# object before unlink returns.
rmrf() {
	local s=$EPOCHREALTIME b=${bucket_of[$2]}
	rm -rf "${1:?}/${TAR_DIR%%/*}"
	elapsed "$s"
	for _ in $(seq 1 15000); do
		[ -n "$(find "$W/s3/$b" -type f -print -quit)" ] || { elapsed "$s"; return 0; }
		sleep 0.02
	done
	echo "objects of removed files are still in $W/s3/$b after 300 s" >&2
	return 1
}
# The random rows share one file, written with dd (not timed) before the cold remount.
mkrand() {
	dd if=/dev/urandom of="$1/rand" bs=1M count="$FIO_RAND_MIB" conv=fsync status=none
	onserver "$2"
}
fiojob() {
	local d=$1 t=$2 name=$3
	shift 3
	fio --name="$name" --filename="$d/rand" --ioengine=psync --numjobs=1 --fallocate=none \
		--size="${FIO_RAND_MIB}M" --bs=4k --output-format=json --output="$W/fio-$name-$t.json" "$@" >&2
}
# fioios NAME TARGET read|write: the I/Os the job completed, after checking it had no error.
fioios() {
	python3 - "$W/fio-$1-$2.json" "$3" <<-'EOF'
		import json, sys
		job = json.load(open(sys.argv[1]))["jobs"][0]
		if job.get("error"):
		    sys.exit("fio job error %d" % job["error"])
		print(job[sys.argv[2]]["total_ios"])
	EOF
}
# fio_randread reads every block of the file once in random order (capped at 3x the write time),
# timed from fio's start to its end (it opens the file and reads; nothing to wait for).
fio_randread() {
	local s=$EPOCHREALTIME a
	fiojob "$1" "$2" randread --rw=randread --direct=0 --runtime=$((3 * FIO_RAND_S))
	a=$(elapsed "$s")
	rate "$(fioios randread "$2" read)" "$a"
}
# fio_randwrite writes random 4 KiB blocks for FIO_RAND_S seconds without fsync; IOPS are the
# writes done over the time from fio's start until they are on the server (for rclone that
# includes fetching the whole file into its cache at open and uploading it after close).
fio_randwrite() {
	local s=$EPOCHREALTIME a
	fiojob "$1" "$2" randwrite --rw=randwrite --time_based --runtime="$FIO_RAND_S"
	a=$(elapsed "$s")
	onserver "$2"
	rate "$(fioios randwrite "$2" write)" "$a"
	rate "$(fioios randwrite "$2" write)" "$(elapsed "$s")"
	rm -f "$1/rand"
}

defrow ddwrite "dd write, bs=128k, $DD_MIB MiB, conv=fsync: until dd returns" MB/s high
defrow ddwrite_srv "dd write: until on the server" MB/s high
defrow ddread "dd read, bs=128k (cold)" MB/s high
defrow untar "untar Go $TAR_DIR ($files_in_tar files) + sync: until it returns" s low
defrow untar_srv "untar: until on the server" s low
defrow md5 "md5sum of every file (cold)" s low
defrow lslr "ls -lRA (cold)" s low
defrow rmrf "rm -rf: until it returns" s low
defrow rmrf_srv "rm -rf: until the objects are gone from the server" s low
defrow randread "fio rand read 4k, $FIO_RAND_MIB MiB file, every block once (cold)" IOPS high
defrow randwrite "fio rand write 4k, ${FIO_RAND_S}s, no fsync: until fio returns" IOPS high
defrow randwrite_srv "fio rand write 4k: until on the server" IOPS high

run dd_write ddwrite ddwrite_srv
cold
run dd_read ddread
run untar untar untar_srv
cold
run md5 md5
cold
run lslr lslr
run rmrf rmrf rmrf_srv
for t in "${targets[@]}"; do mkrand "${dirs[$t]}" "$t"; done
cold
run fio_randread randread
run fio_randwrite randwrite randwrite_srv

echo "load after the run: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)" >>"$W/machine.txt"
mkdir -p "$(dirname "$OUT")"
python3 bench/report.py "$RES" "$W/machine.txt" "$OUT" kmipfs-s3 kmipfs-s3,rclone-crypt rclone-crypt:rc
echo "bench-s3: markdown table written to $OUT" >&2
exit 0
}
