#!/usr/bin/env bash
# bench.sh runs one workload side by side, in one run, on four targets: a plain directory, go-fuse's
# loopback (FUSE without encryption, bench/loopback), gocryptfs and kmipfs (the demo: local store,
# embedded KMIP server on loopback). Each row of the workload runs on all four targets before the
# next row starts, so a machine that gets busier during the run penalises all of them alike. It
# prints one table with ratios and writes the same table, with the machine description, as markdown to
# $BENCH_OUT for docs/PERFORMANCE.md.
#
# Rows: gocryptfs's benchmark (dd write and read with bs=128k, untar of Go's source tree, md5sum of
# every file, ls -lR, rm -rf); fio (sequential 1 MiB write and read, random 4 KiB write without and
# with an fsync after each write, random 4 KiB read); SQLite inserts with one transaction per row;
# the peak memory (VmHWM) of each FUSE daemon while it writes one big file.
#
# Run as root (it mounts and drops the page cache); `make bench-fs` installs the tools first
# (bench/setup.sh) and builds bin/kmipfs. Environment:
#   BENCH_QUICK=1        small sizes, about a minute in all: for trying the script, not for numbers
#   BENCH_DIR            scratch space (kept afterwards); default a temp dir on /var/tmp (removed)
#   BENCH_OUT            the markdown table; default bench/results-latest.md
#   BENCH_BIGFILE_GIB    size of the peak-memory write (default 4, quick 0.25)
#   BENCH_SQLITE_ROWS    rows inserted (default 2000, quick 200)
#   BENCH_LOOPBACK_PASSTHROUGH=1  let the loopback baseline use FUSE passthrough (default off)
#   BENCH_PPROF=1        start kmipfs with KMIPFS_PPROF and save a 10 s CPU profile of the daemon
#                        during each kmipfs row to BENCH_DIR (kept); BENCH_PPROF_ADDR picks the port
#   KMIPFS               the binary (default bin/kmipfs)

# The whole script is one brace group, which bash parses completely before it runs any of it, so
# editing this file while a benchmark runs does not change the running one.
{
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
root=$(pwd)
KMIPFS=${KMIPFS:-$root/bin/kmipfs}
OUT=${BENCH_OUT:-$root/bench/results-latest.md}
PPROF=${BENCH_PPROF:-0}
PPROF_ADDR=${BENCH_PPROF_ADDR:-127.0.0.1:6061}

if [ "${BENCH_QUICK:-0}" = 1 ]; then
	mode=quick DD_MIB=32 TAR_DIR=src/go FIO_SEQ_MIB=64 FIO_RAND_MIB=32 FIO_RAND_S=2 FIO_FSYNC_S=1
	ROWS=${BENCH_SQLITE_ROWS:-200} BIG_GIB=${BENCH_BIGFILE_GIB:-0.25}
else
	mode=full DD_MIB=250 TAR_DIR=src FIO_SEQ_MIB=512 FIO_RAND_MIB=256 FIO_RAND_S=10 FIO_FSYNC_S=5
	ROWS=${BENCH_SQLITE_ROWS:-2000} BIG_GIB=${BENCH_BIGFILE_GIB:-4}
fi
BIG_MIB=$(awk -v g="$BIG_GIB" 'BEGIN { printf "%d", g * 1024 }')

need() { command -v "$1" >/dev/null 2>&1 || { echo "bench: $1 is missing (bench/setup.sh installs it)" >&2; exit 2; }; }
need fio; need gocryptfs; need sqlite3; need python3; need fusermount3; need go
[ "$PPROF" = 1 ] && need curl
[ "$(id -u)" = 0 ] || { echo "bench: run as root (mounts, drop_caches)" >&2; exit 2; }
[ -x "$KMIPFS" ] || { echo "bench: $KMIPFS is not built (make build)" >&2; exit 2; }

keep=${BENCH_DIR:+1}
[ "$PPROF" = 1 ] && keep=1
W=${BENCH_DIR:-$(mktemp -d /var/tmp/kmipfs-bench.XXXXXX)}
mkdir -p "$W"
W=$(cd "$W" && pwd)
RES=$W/results.tsv
: >"$RES"
pids=()
mounts=()

# cleanup unmounts and stops the daemons; it keeps the scratch directory, with its logs, when
# BENCH_DIR or BENCH_PPROF asked for it or when the run failed.
cleanup() {
	local rc=$?
	for m in "${mounts[@]}"; do fusermount3 -u "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null || true; done
	for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ -z "$keep" ] && [ "$rc" = 0 ]; then rm -rf "$W"; else echo "bench: scratch data kept in $W" >&2; fi
}
trap cleanup EXIT

# Free space: the big file, the fio files and the Go tree, on whichever target is running, plus
# the local object store's copy of kmipfs's data.
need_mib=$((BIG_MIB + FIO_SEQ_MIB + 1024))
avail_mib=$(df -Pm "$W" | awk 'NR == 2 { print $4 }')
[ "$avail_mib" -ge "$need_mib" ] || {
	echo "bench: $W has $avail_mib MiB free, the run needs about $need_mib MiB (set BENCH_DIR or BENCH_BIGFILE_GIB)" >&2
	exit 2
}

# --- the machine, recorded with the results ---
dev=$(df -P "$W" | awk 'NR == 2 { print $1 }')
disk=$(lsblk -no PKNAME "$dev" 2>/dev/null | head -1)
[ -n "$disk" ] || disk=$(basename "$dev")
{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "kmipfs: $("$KMIPFS" --version 2>/dev/null || git describe --always --dirty 2>/dev/null || echo unknown)"
	echo "cpu: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
	echo "memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
	echo "disk: $(lsblk -d -n -o NAME,ROTA,MODEL "/dev/$disk" 2>/dev/null | awk '{ $2 = ($2 == 1 ? "rotational" : "non-rotational"); print }' || echo "$dev") (as the kernel reports it; the file system on $(df -P "$W" | awk 'NR == 2 { print $6 }') holds every target's data)"
	echo "kernel: $(uname -r)"
	echo "gocryptfs: $(gocryptfs --version | head -1)"
	echo "loopback: go-fuse $(go list -m -f '{{.Version}}' github.com/hanwen/go-fuse/v2), passthrough $([ "${BENCH_LOOPBACK_PASSTHROUGH:-0}" = 1 ] && echo on || echo off)"
	echo "fio: $(fio --version)"
	echo "sqlite3: $(sqlite3 --version | cut -d' ' -f1)"
	echo "go: $(go env GOVERSION)"
	echo "mode: $mode (dd $DD_MIB MiB, untar of Go's $TAR_DIR, fio seq $FIO_SEQ_MIB MiB, fio rand on $FIO_RAND_MIB MiB for ${FIO_RAND_S}s / ${FIO_FSYNC_S}s with fsync, $ROWS SQLite rows, big file $BIG_MIB MiB)"
} >"$W/machine.txt"
cat "$W/machine.txt" >&2

dropcaches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# waitmount DIR PID: waits up to 30 s for the daemon PID to mount DIR.
waitmount() {
	for _ in $(seq 1 600); do
		grep -q " $1 " /proc/mounts && return 0
		kill -0 "$2" 2>/dev/null || { echo "bench: the daemon for $1 exited; see the logs in $W" >&2; exit 1; }
		sleep 0.05
	done
	echo "bench: $1 did not mount within 30 s; see the logs in $W" >&2
	exit 1
}

# Go's source tree (or a part of it in quick mode) as a tar file, made once.
tarball=$W/go-${TAR_DIR//\//-}.tar
[ -f "$tarball" ] || tar -C "$(go env GOROOT)" -cf "$tarball" "$TAR_DIR"
files_in_tar=$(tar -tf "$tarball" | grep -vc '/$')

# The SQLite script: one INSERT per implicit transaction, rollback journal.
{
	echo "PRAGMA journal_mode=DELETE; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
	for i in $(seq 1 "$ROWS"); do echo "INSERT INTO t(v) VALUES('row $i of the benchmark');"; done
} >"$W/sql.txt"

# --- the four targets ---
mkdir -p "$W/plain" "$W/lo-back" "$W/lo-mnt" "$W/gc-cipher" "$W/gc-mnt"
declare -A dirs pid_of

# go-fuse's loopback without FUSE passthrough (bench/loopback says why), unless asked for.
go build -o "$W/loopback" ./bench/loopback
lo_flags=()
[ "${BENCH_LOOPBACK_PASSTHROUGH:-0}" = 1 ] && lo_flags=(-passthrough)
"$W/loopback" "${lo_flags[@]}" "$W/lo-mnt" "$W/lo-back" >"$W/loopback.log" 2>&1 &
pids+=($!); pid_of[loopback]=$!; mounts+=("$W/lo-mnt"); waitmount "$W/lo-mnt" $!

echo bench-password >"$W/gc-pass"
[ -f "$W/gc-cipher/gocryptfs.conf" ] || gocryptfs -q -nosyslog -init -passfile "$W/gc-pass" "$W/gc-cipher" >/dev/null
gocryptfs -fg -q -nosyslog -passfile "$W/gc-pass" "$W/gc-cipher" "$W/gc-mnt" >"$W/gocryptfs.log" 2>&1 &
pids+=($!); pid_of[gocryptfs]=$!; mounts+=("$W/gc-mnt"); waitmount "$W/gc-mnt" $!

# kmipfs: the zero set-up demo, bucket "demo". KMIPFS_PPROF is read by the binary at start.
if [ "$PPROF" = 1 ]; then
	KMIPFS_PPROF=$PPROF_ADDR "$KMIPFS" demo "$W/k" >"$W/kmipfs.log" 2>&1 &
else
	"$KMIPFS" demo "$W/k" >"$W/kmipfs.log" 2>&1 &
fi
pids+=($!); pid_of[kmipfs]=$!; mounts+=("$W/k/mnt")
waitmount "$W/k/mnt" "${pid_of[kmipfs]}"
for _ in $(seq 1 200); do [ -d "$W/k/mnt/demo" ] && break; sleep 0.05; done
[ -d "$W/k/mnt/demo" ] || { echo "bench: kmipfs demo has no bucket demo; see $W/kmipfs.log" >&2; exit 1; }
if [ "$PPROF" = 1 ] && ! curl -sf -o /dev/null "http://$PPROF_ADDR/debug/pprof/"; then
	echo "bench: $KMIPFS serves no profile at $PPROF_ADDR (no KMIPFS_PPROF support?); continuing without profiles" >&2
	PPROF=0
fi

targets=(plain loopback gocryptfs kmipfs)
dirs=([plain]=$W/plain [loopback]=$W/lo-mnt [gocryptfs]=$W/gc-mnt [kmipfs]=$W/k/mnt/demo)

# --- measuring ---
# elapsed START: seconds since START (an $EPOCHREALTIME value).
elapsed() { awk -v s="$1" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.4f", e - s }'; }
# rate AMOUNT SECONDS: AMOUNT per second.
rate() { awk -v a="$1" -v s="$2" 'BEGIN { printf "%.4f", a / s }'; }
# mbps BYTES SECONDS: decimal MB/s, as dd and fio's bw_bytes count.
mbps() { awk -v a="$1" -v s="$2" 'BEGIN { printf "%.4f", a / 1e6 / s }'; }

# defrow KEY LABEL UNIT BETTER GOAL: one row of the table. BETTER is high or low; GOAL is what
# issue 5 asks of kmipfs on this row (report.py says whether it is met): lo>=R and gc>=R are
# minimum ratios against loopback and gocryptfs, max=N an upper bound on kmipfs's own value.
defrow() { printf 'row\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RES"; }

# run ROW FUNC [TARGETS...]: runs FUNC DIR TARGET on each target (default all four) and records
# what it prints on stdout as the row's value. A failure is recorded as "fail" with one line
# naming the log, and the run goes on. FUNC runs as a background job so that set -e holds inside
# it (bash ignores -e in functions called from an if or a command substitution).
run() {
	local row=$1 fn=$2 t v
	shift 2
	local ts=("$@")
	[ ${#ts[@]} -gt 0 ] || ts=("${targets[@]}")
	for t in "${ts[@]}"; do
		echo "bench: $row on $t" >&2
		prof_start "$row" "$t"
		"$fn" "${dirs[$t]}" "$t" >"$W/$row-$t.out" 2>"$W/$row-$t.err" &
		if wait $! && v=$(tail -1 "$W/$row-$t.out") && [[ $v =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
			printf 'val\t%s\t%s\t%s\n' "$row" "$t" "$v" >>"$RES"
		else
			echo "bench: $row failed on $t: $(tail -1 "$W/$row-$t.err") (log: $W/$row-$t.err)" >&2
			printf 'val\t%s\t%s\tfail\n' "$row" "$t" >>"$RES"
		fi
		prof_wait
	done
}

# A CPU profile of the kmipfs daemon covers the first 10 s of each kmipfs row. Only one profile
# can run at a time, so the next row waits for it.
profpid=
prof_start() {
	[ "$PPROF" = 1 ] && [ "$2" = kmipfs ] || return 0
	curl -sf -o "$W/pprof-$1.pb.gz" "http://$PPROF_ADDR/debug/pprof/profile?seconds=10" &
	profpid=$!
}
prof_wait() {
	[ -n "$profpid" ] || return 0
	wait "$profpid" || echo "bench: CPU profile of $row failed" >&2
	profpid=
}

# fiojob DIR TARGET NAME FILE ARGS...: one fio job, psync, one job, JSON output to $W.
fiojob() {
	local d=$1 t=$2 name=$3 file=$4
	shift 4
	fio --name="$name" --filename="$d/$file" --ioengine=psync --numjobs=1 --fallocate=none \
		--output-format=json --output="$W/fio-$name-$t.json" "$@" >&2
}
# fioval NAME TARGET read|write bw|iops: MB/s (decimal, as dd's rows) or IOPS of the job.
fioval() {
	python3 - "$W/fio-$1-$2.json" "$3" "$4" <<-'EOF'
		import json, sys
		job = json.load(open(sys.argv[1]))["jobs"][0]
		if job.get("error"):
		    sys.exit("fio job error %d" % job["error"])
		io = job[sys.argv[2]]
		print("%.4f" % (io["bw_bytes"] / 1e6 if sys.argv[3] == "bw" else io["iops"]))
	EOF
}

# --- the workloads: each prints its value as the last line on stdout ---
dd_write() {
	local s=$EPOCHREALTIME
	dd if=/dev/zero of="$1/zero" bs=131072 count=$((DD_MIB * 8)) conv=fsync status=none
	mbps $((DD_MIB * 1048576)) "$(elapsed "$s")"
}
dd_read() {
	dropcaches
	local s=$EPOCHREALTIME
	dd if="$1/zero" of=/dev/null bs=131072 status=none
	mbps $((DD_MIB * 1048576)) "$(elapsed "$s")"
	rm -f "$1/zero"
}
untar() {
	local s=$EPOCHREALTIME
	tar -xf "$tarball" -C "$1"
	sync
	elapsed "$s"
}
md5() {
	dropcaches
	local s=$EPOCHREALTIME n
	n=$(cd "$1" && find "$TAR_DIR" -type f -print0 | xargs -0 md5sum | wc -l)
	[ "$n" = "$files_in_tar" ] || { echo "md5sum saw $n files, the tar has $files_in_tar" >&2; return 1; }
	elapsed "$s"
}
lslr() {
	dropcaches
	local s=$EPOCHREALTIME
	ls -lR "$1/$TAR_DIR" >/dev/null
	elapsed "$s"
}
rmrf() {
	local s=$EPOCHREALTIME
	rm -rf "${1:?}/${TAR_DIR%%/*}"
	elapsed "$s"
}
fio_seqwrite() {
	fiojob "$1" "$2" seqwrite seq --rw=write --bs=1M --size="${FIO_SEQ_MIB}M" --end_fsync=1
	fioval seqwrite "$2" write bw
}
fio_seqread() {
	dropcaches
	fiojob "$1" "$2" seqread seq --rw=read --bs=1M --size="${FIO_SEQ_MIB}M"
	fioval seqread "$2" read bw
	rm -f "$1/seq"
}
# The random rows share one file: fio lays it out (not timed) in the first job, the fsync job
# writes into it again, and the read job reads what the writes left. The read job reads every
# block once in random order (size bound, capped at 3x the write rows' time) rather than for a
# fixed time, because a time-bound job rereads blocks and ends up measuring the page cache.
fio_randwrite() {
	fiojob "$1" "$2" randwrite rand --rw=randwrite --bs=4k --size="${FIO_RAND_MIB}M" --time_based --runtime="$FIO_RAND_S"
	fioval randwrite "$2" write iops
}
fio_randwrite_fsync() {
	sync # the previous row's dirty pages, so that the first fsync pays only for its own write
	fiojob "$1" "$2" randwritefsync rand --rw=randwrite --bs=4k --size="${FIO_RAND_MIB}M" --fsync=1 --time_based --runtime="$FIO_FSYNC_S"
	fioval randwritefsync "$2" write iops
}
fio_randread() {
	dropcaches
	fiojob "$1" "$2" randread rand --rw=randread --bs=4k --size="${FIO_RAND_MIB}M" --direct=0 --runtime=$((3 * FIO_RAND_S))
	fioval randread "$2" read iops
	rm -f "$1/rand"
}
sqlite() {
	rm -f "$1/bench.db" "$1/bench.db-journal"
	local s=$EPOCHREALTIME n
	sqlite3 -bail "$1/bench.db" <"$W/sql.txt" >/dev/null
	rate "$ROWS" "$(elapsed "$s")"
	n=$(sqlite3 "$1/bench.db" 'SELECT count(*) FROM t')
	[ "$n" = "$ROWS" ] || { echo "the database holds $n rows, $ROWS were inserted" >&2; return 1; }
	rm -f "$1/bench.db" "$1/bench.db-journal"
}
# peakmem resets the daemon's peak RSS (clear_refs 5), writes the big file with an fsync at the
# end, and prints the daemon's VmHWM in MiB: the most memory it held during the write. The
# kmipfs demo process also runs the embedded KMIP server, a few MiB.
peakmem() {
	local pid=${pid_of[$2]}
	echo 5 >"/proc/$pid/clear_refs"
	dd if=/dev/zero of="$1/big" bs=1048576 count="$BIG_MIB" conv=fsync status=none
	awk '/^VmHWM/ { printf "%.1f\n", $2 / 1024 }' "/proc/$pid/status"
	rm -f "$1/big"
}

defrow ddwrite "dd write, bs=128k, $DD_MIB MiB" MB/s high "lo>=1 gc>=1.5"
defrow ddread "dd read, bs=128k" MB/s high "lo>=1 gc>=1.5"
defrow untar "untar Go $TAR_DIR ($files_in_tar files)" s low "lo>=1 gc>=1.5"
defrow md5 "md5sum of every file" s low "lo>=1 gc>=1.5"
defrow lslr "ls -lR" s low "lo>=1 gc>=1.5"
defrow rmrf "rm -rf" s low "lo>=1 gc>=1.5"
defrow seqwrite "fio seq write 1M, $FIO_SEQ_MIB MiB, end_fsync" MB/s high -
defrow seqread "fio seq read 1M" MB/s high -
defrow randwrite "fio rand write 4k, $FIO_RAND_MIB MiB file" IOPS high "gc>=1"
defrow randwritefsync "fio rand write 4k, fsync=1" IOPS high "gc>=1"
defrow randread "fio rand read 4k" IOPS high -
defrow sqlite "SQLite insert, 1 tx/row" rows/s high "gc>=1"
defrow peakmem "daemon peak RSS, $BIG_MIB MiB write" MiB low "max=300"

run ddwrite dd_write
run ddread dd_read
run untar untar
run md5 md5
run lslr lslr
run rmrf rmrf
run seqwrite fio_seqwrite
run seqread fio_seqread
run randwrite fio_randwrite
run randwritefsync fio_randwrite_fsync
run randread fio_randread
run sqlite sqlite
run peakmem peakmem loopback gocryptfs kmipfs

mkdir -p "$(dirname "$OUT")"
python3 bench/report.py "$RES" "$W/machine.txt" "$OUT"
echo "bench: markdown table written to $OUT" >&2
if [ "$PPROF" = 1 ]; then
	echo "bench: CPU profiles of the kmipfs daemon: $W/pprof-*.pb.gz (go tool pprof -top $KMIPFS FILE)" >&2
fi
exit 0
}
