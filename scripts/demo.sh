#!/usr/bin/env bash
# The main job on one machine, for real: install the peers, build oa-run, bring up the local
# lab (player PCs as network namespaces, each with a real OBS and a real OpenArena client), run
# scenarios/demo.yaml against it, print the manifest summary, and take the lab down again.
#
#   sudo scripts/demo.sh            # extra arguments go to oa-run, e.g. --set matches.repeats=2
#
# The live view is on: oa-run prints its URL (DEMO_LIVE=IP:PORT, default 127.0.0.1:8080).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) -eq 0 ]] || { echo "demo.sh: needs root (network namespaces, tc/iptables): sudo $0 $*" >&2; exit 1; }

scripts/install-peers.sh
cargo build --release --locked
# A fresh lab directory per demo, so earlier recordings never collide with this run's names.
export LAB_DIR=${LAB_DIR:-/tmp/oa-lab-demo-$(date -u +%Y%m%dT%H%M%SZ)}
trap 'scripts/lab.sh down >/dev/null 2>&1 || true' EXIT
scripts/lab.sh up

# The scenario's `latency.shaper: auto` applies the latencies for real on this kernel: tc/netem
# where it has sch_netem, otherwise oa-run's own NFQUEUE shaper (`oa-run check` says which).
set +e
target/release/oa-run scenarios/demo.yaml --live "${DEMO_LIVE:-127.0.0.1:8080}" "$@"
rc=$?
set -e
echo "demo.sh: oa-run exited $rc; recordings are in $LAB_DIR/pc*/recordings" >&2
exit $rc
