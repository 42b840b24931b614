#!/usr/bin/env bash
# ceph-rgw.sh brings a one-node Ceph cluster with the Object Gateway up on loopback, and down again, for
# kmipfs's S3 tests against radosgw (the S3 server of Ceph's KMIP documentation). No systemd, no cephadm:
# one monitor, one OSD with bluestore on a sparse file, one radosgw, all state and logs under DIR.
#
#   scripts/ceph-rgw.sh up DIR     start (installs ceph-mon ceph-osd radosgw ceph-common if missing)
#   scripts/ceph-rgw.sh env DIR    print the KMIPFS_TEST_S3_* variables of a running cluster
#   scripts/ceph-rgw.sh down DIR   stop every daemon of DIR and remove DIR
#
# Ports: CEPH_MON_PORT (default 16789, messenger v2) and CEPH_RGW_PORT (default 17480), both on 127.0.0.1.
# After "up", DIR/credentials holds the S3 user's keys in the AWS shared-credentials format and
# DIR/endpoint the URL. Needs root (or a user that may run the ceph daemons) and about 1 GiB of disk.
set -euo pipefail

cmd=${1:-}
DIR=${2:-}
if [[ -z $cmd || -z $DIR ]]; then
	sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
fi
MON_PORT=${CEPH_MON_PORT:-16789}
RGW_PORT=${CEPH_RGW_PORT:-17480}
CONF=$DIR/ceph.conf

log() { echo "ceph-rgw: $*" >&2; }

ceph_() { timeout 60 ceph -c "$CONF" "$@"; }

# wait_for WHAT SECONDS COMMAND...: retry COMMAND until it succeeds.
wait_for() {
	local what=$1 deadline=$((SECONDS + $2))
	shift 2
	while ((SECONDS < deadline)); do
		if timeout 10 "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.2
	done
	log "$what did not come up in time; logs are in $DIR/log"
	tail -n 20 "$DIR"/log/*.log >&2 || true
	return 1
}

install_packages() {
	local missing=""
	for p in ceph-mon:ceph-mon ceph-osd:ceph-osd radosgw:radosgw ceph-common:ceph; do
		command -v "${p#*:}" >/dev/null 2>&1 || missing="$missing ${p%%:*}"
	done
	if [[ -n $missing ]]; then
		log "installing$missing"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
	fi
}

up() {
	install_packages
	if [[ -e $DIR/ceph.conf ]]; then
		log "$DIR already holds a cluster; run: $0 down $DIR"
		exit 1
	fi
	mkdir -p "$DIR"/{mon/ceph-a,osd/ceph-0,rgw,run,log}
	DIR=$(cd "$DIR" && pwd)
	CONF=$DIR/ceph.conf
	local fsid
	fsid=$(uuidgen)
	cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $DIR/keyring
run dir = $DIR/run
admin socket = $DIR/run/\$cluster-\$name.asok
pid file = $DIR/run/\$cluster-\$name.pid
log file = $DIR/log/\$cluster-\$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 1
[mon]
mon data = $DIR/mon/\$cluster-\$id
keyring = $DIR/mon/\$cluster-\$id/keyring
[osd]
osd data = $DIR/osd/\$cluster-\$id
keyring = $DIR/osd/\$cluster-\$id/keyring
osd objectstore = bluestore
bluestore block create = true
bluestore block size = 10737418240
bluestore fsck on mkfs = false
osd memory target = 939524096
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $DIR/rgw
rgw enable usage log = false
keyring = $DIR/rgw/keyring
log file = $DIR/log/rgw.log
EOF
	local t0=$SECONDS
	log "monitor on 127.0.0.1:$MON_PORT"
	ceph-authtool --create-keyring "$DIR/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
	ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n client.admin \
		--cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
	ceph-authtool "$DIR/mon.keyring" --import-keyring "$DIR/keyring" >/dev/null
	monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/monmap" >/dev/null
	ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/mon.keyring"
	ceph-mon -c "$CONF" -i a
	wait_for "the monitor" 30 ceph -c "$CONF" mon stat

	log "OSD with bluestore on a sparse 10 GiB file"
	local uuid id
	uuid=$(uuidgen)
	id=$(ceph_ osd new "$uuid")
	ceph-authtool --create-keyring "$DIR/osd/ceph-$id/keyring" --gen-key -n "osd.$id" >/dev/null
	ceph_ auth add "osd.$id" osd 'allow *' mon 'allow profile osd' -i "$DIR/osd/ceph-$id/keyring" >/dev/null 2>&1
	ceph-osd -c "$CONF" -i "$id" --mkfs --osd-uuid "$uuid" >/dev/null 2>&1 ||
		{ log "ceph-osd --mkfs failed"; tail -n 20 "$DIR/log/ceph-osd.$id.log" >&2; exit 1; }
	ceph-osd -c "$CONF" -i "$id" 2>>"$DIR/log/ceph-osd.$id.stderr"
	wait_for "the OSD" 60 sh -c "ceph -c '$CONF' osd stat | grep -q '1 up'"

	log "radosgw on 127.0.0.1:$RGW_PORT"
	ceph_ auth get-or-create client.rgw.a mon 'allow rw' osd 'allow rwx' -o "$DIR/rgw/keyring" >/dev/null
	radosgw -c "$CONF" -n client.rgw.a
	wait_for "radosgw" 90 curl -sf -o /dev/null "http://127.0.0.1:$RGW_PORT/"

	local ak sk
	ak=$(tr -dc 'A-Z0-9' </dev/urandom | head -c 20 || true)
	sk=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 40 || true)
	radosgw-admin -c "$CONF" user create --uid=kmipfs --display-name="kmipfs tests" \
		--access-key="$ak" --secret-key="$sk" >/dev/null
	umask 077
	printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$ak" "$sk" >"$DIR/credentials"
	echo "http://127.0.0.1:$RGW_PORT" >"$DIR/endpoint"
	log "up in $((SECONDS - t0))s: endpoint $(cat "$DIR/endpoint"), credentials in $DIR/credentials"
}

env_() {
	DIR=$(cd "$DIR" && pwd)
	echo "KMIPFS_TEST_S3_ENDPOINT=$(cat "$DIR/endpoint")"
	echo "KMIPFS_TEST_S3_CREDENTIALS=$DIR/credentials"
	echo "KMIPFS_TEST_S3_REGION=default"
}

down() {
	[[ -d $DIR ]] || return 0
	DIR=$(cd "$DIR" && pwd)
	local pids=()
	for f in "$DIR"/run/*.pid; do
		[[ -e $f ]] && pids+=("$(cat "$f")")
	done
	if ((${#pids[@]})); then
		log "stopping ${#pids[@]} daemons"
		kill "${pids[@]}" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			alive=0
			for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
			((alive)) || break
			sleep 0.1
		done
		kill -9 "${pids[@]}" 2>/dev/null || true
	fi
	rm -rf "$DIR"
}

case $cmd in
up) up ;;
env) env_ ;;
down) down ;;
*)
	log "unknown command $cmd (up, env, down)"
	exit 2
	;;
esac
