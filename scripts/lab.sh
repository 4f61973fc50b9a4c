#!/usr/bin/env bash
# A local demo lab on one Linux machine: every player PC is a network namespace with its own IP
# on a bridge, running a real headless OBS (obs-websocket on port 4455) and a real OpenArena
# client. The host side of the bridge (${LAB_NET}.1) plays the game-server machine: oa-run
# launches the server there (scenarios/demo.yaml).
#
#   sudo scripts/lab.sh up        # namespaces, Xvfb, OBS, game clients; waits for every OBS
#   sudo scripts/lab.sh clients   # (re)start the game clients (after a run ended, or to rejoin)
#   sudo scripts/lab.sh obs       # restart every OBS (fresh instances, e.g. between studies)
#   sudo scripts/lab.sh status    # what runs, whether each OBS answers, recordings
#   sudo scripts/lab.sh down      # stop everything, delete namespaces and links (safe to repeat)
#
# Settings (environment; `up` saves them in $LAB_DIR/lab.env, which later commands reuse):
#   LAB_DIR=/tmp/oa-lab  LAB_PLAYERS=2  LAB_NAME=oalab  LAB_NET=10.77.0  LAB_SERVER_PORT=27960
#   OBS_PORT=4455  OBS_PASSWORD=oa-lab-obs  LAB_CLIENTS=1 (0: `up` starts OBS only)
#   LAB_OBS_TIMEOUT=90 (seconds `up` waits for every OBS port)
#   `down` keeps $LAB_DIR (recordings); LAB_PURGE=1 deletes it too.
# sudo drops the environment: pass settings through it, e.g. `sudo OBS_PASSWORD=x scripts/lab.sh up`.
set -euo pipefail

die() {
    echo "lab.sh: $*" >&2
    [[ "${UP_STARTED:-0}" == 1 ]] && echo "lab.sh: what was started is still there: run $0 down" >&2
    exit 1
}
log() { echo "lab.sh: $*" >&2; }

LAB_DIR=${LAB_DIR:-/tmp/oa-lab}
# `down`, `status` and `clients` use the settings `up` saved, so they find what `up` built even
# when called with another environment; `up` takes the environment (a changed lab). Only our own
# variable names are read from the file.
if [[ "${1:-}" != up && -f "$LAB_DIR/lab.env" ]]; then
    while IFS='=' read -r k v; do
        case "$k" in
            LAB_PLAYERS | LAB_NAME | LAB_NET | LAB_SERVER_PORT | OBS_PORT) printf -v "$k" '%s' "$v" ;;
        esac
    done <"$LAB_DIR/lab.env"
fi
PREV_PLAYERS=$(sed -n 's/^LAB_PLAYERS=\([0-9]*\)$/\1/p' "$LAB_DIR/lab.env" 2>/dev/null || true)
LAB_PLAYERS=${LAB_PLAYERS:-2}
LAB_NAME=${LAB_NAME:-oalab}
LAB_NET=${LAB_NET:-10.77.0}
LAB_SERVER_PORT=${LAB_SERVER_PORT:-27960}
OBS_PORT=${OBS_PORT:-4455}
OBS_PASSWORD=${OBS_PASSWORD:-oa-lab-obs}
LAB_CLIENTS=${LAB_CLIENTS:-1}
LAB_OBS_TIMEOUT=${LAB_OBS_TIMEOUT:-90}
OA_CLIENT=${OA_CLIENT:-/usr/games/openarena}
OBS_BIN=${OBS_BIN:-obs}

[[ "$LAB_PLAYERS" =~ ^[1-9][0-9]?$ ]] && ((LAB_PLAYERS <= 40)) || die "LAB_PLAYERS must be 1..40 (got '$LAB_PLAYERS')"
[[ "$LAB_NAME" =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "LAB_NAME must be 1-8 lowercase letters/digits, starting with a letter (interface names are short)"
[[ "$LAB_NET" =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || die "LAB_NET must be the first three octets of a /24, e.g. 10.77.0"
[[ "$LAB_SERVER_PORT" =~ ^[0-9]+$ && "$OBS_PORT" =~ ^[0-9]+$ ]] || die "ports must be numbers"

BRIDGE="${LAB_NAME}br"
HOST_IP="${LAB_NET}.1"

ns_name() { echo "${LAB_NAME}-pc$1"; }
host_veth() { echo "${LAB_NAME}h$1"; }
player_ip() { echo "${LAB_NET}.$((10 + $1))"; }
pc_dir() { echo "$LAB_DIR/pc$1"; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must be run as root (network namespaces); try: sudo $0 $*"; }

# A pid file names the leader of a process group we started with setsid.
alive() { # pidfile
    local pid
    [[ -f "$1" ]] || return 1
    pid=$(<"$1")
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# Stop process groups (named by pid files) together: `sig` to all, then SIGKILL to any group
# still there after `grace` seconds.
stop_groups() { # sig grace what pidfile...
    local sig=$1 grace=$2 what=$3 f pid i left
    shift 3
    local pids=()
    for f in "$@"; do
        [[ -f "$f" ]] || continue
        pid=$(<"$f")
        rm -f "$f"
        [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 -- "-$pid" 2>/dev/null || continue
        kill "-$sig" -- "-$pid" 2>/dev/null || true
        pids+=("$pid")
    done
    ((${#pids[@]})) || return 0
    for ((i = 0; i <= grace * 10; i++)); do
        left=()
        for pid in "${pids[@]}"; do
            kill -0 -- "-$pid" 2>/dev/null && left+=("$pid")
        done
        ((${#left[@]})) || return 0
        sleep 0.1
    done
    log "${#left[@]} $what did not exit after SIG$sig within ${grace}s; killing them"
    for pid in "${left[@]}"; do
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
}

# Start a command inside a namespace as the leader of its own session/process group.
# (`setsid` does not fork here: a background job of a non-interactive shell is no group
# leader, so $! is the new group's id; `ip netns exec` execs without forking.)
start_in_ns() { # ns pidfile logfile cmd...
    local ns=$1 pidfile=$2 logfile=$3
    shift 3
    setsid ip netns exec "$ns" "$@" >"$logfile" 2>&1 </dev/null &
    echo $! >"$pidfile"
}

port_answers() { # ip port
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# --- network -----------------------------------------------------------------------------------

net_up() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
    fi
    ip addr replace "$HOST_IP/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    local i ns veth
    for ((i = 1; i <= LAB_PLAYERS; i++)); do
        ns=$(ns_name "$i")
        veth=$(host_veth "$i")
        ip netns list | grep -qx "$ns\( (id: [0-9]*)\)\?" || ip netns add "$ns"
        if ! ip link show "$veth" >/dev/null 2>&1; then
            ip -n "$ns" link del eth0 2>/dev/null || true
            ip link add "$veth" type veth peer name eth0 netns "$ns"
        fi
        ip link set "$veth" master "$BRIDGE"
        ip link set "$veth" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr replace "$(player_ip "$i")/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" route replace default via "$HOST_IP"
    done
}

net_down() {
    local ns pid
    # Every namespace of this lab, also ones from an earlier `up` with more players.
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^${LAB_NAME}-pc[0-9]+$" || true); do
        # Safety net: anything still running inside the namespace (pid files lost, children).
        local killed=()
        for pid in $(ip netns pids "$ns" 2>/dev/null || true); do
            kill -KILL "$pid" 2>/dev/null && killed+=("$pid")
        done
        ip netns del "$ns" 2>/dev/null || true
        # A killed Xvfb cannot remove its display lock; remove the locks that name those pids.
        local lock
        for lock in /tmp/.X*-lock; do
            [[ -f "$lock" ]] || continue
            pid=$(tr -dc '0-9' <"$lock" 2>/dev/null || true)
            [[ -n "$pid" && " ${killed[*]} " == *" $pid "* ]] && rm -f "$lock"
        done
    done
    # Deleting a namespace deletes its veth end and so the host end; leftovers are removed here.
    local link
    for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^${LAB_NAME}h[0-9]+$" || true); do
        ip link del "$link" 2>/dev/null || true
    done
    if ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link del "$BRIDGE"
    fi
}

# --- per-PC programs ---------------------------------------------------------------------------

seed_obs() { # i
    local dir cfg prof
    dir=$(pc_dir "$1")
    cfg="$dir/config/obs-studio"
    prof="$cfg/basic/profiles/oalab"
    mkdir -p "$prof" "$dir/recordings"
    chmod 700 "$dir/config"
    # global.ini holds the websocket password: written 0600 from the start.
    (
        umask 077
        cat >"$cfg/global.ini" <<EOF
[General]
FirstRun=true
ConfirmOnExit=false
[Basic]
Profile=oalab
ProfileDir=oalab
SceneCollection=oalab
SceneCollectionFile=oalab
[OBSWebSocket]
FirstLoad=false
ServerEnabled=true
ServerPort=$OBS_PORT
AuthRequired=true
ServerPassword=$OBS_PASSWORD
AlertsEnabled=false
EOF
    )
    chmod 600 "$cfg/global.ini"
    # A small profile keeps the encoder cheap on a 2-core machine.
    cat >"$prof/basic.ini" <<EOF
[General]
Name=oalab
[Video]
BaseCX=320
BaseCY=240
OutputCX=320
OutputCY=240
FPSType=1
FPSInt=10
[Output]
Mode=Simple
[SimpleOutput]
FilePath=$dir/recordings
RecFormat=mkv
RecQuality=Small
RecEncoder=x264
EOF
    # One scene: the PC's game screen (its own X display), captured 1:1 into the 320x240 canvas.
    # OBS 29 links scene items to sources by name.
    mkdir -p "$cfg/basic/scenes"
    cat >"$cfg/basic/scenes/oalab.json" <<EOF
{
  "name": "oalab",
  "current_scene": "Game",
  "current_program_scene": "Game",
  "scene_order": [{"name": "Game"}],
  "groups": [], "quick_transitions": [], "transitions": [], "saved_projectors": [],
  "current_transition": "Fade", "transition_duration": 300,
  "sources": [
    {"id": "scene", "versioned_id": "scene", "name": "Game", "enabled": true, "mixers": 0,
     "settings": {"id_counter": 1, "custom_size": false, "items": [
       {"name": "Game screen", "id": 1, "visible": true, "locked": true, "rot": 0.0,
        "pos": {"x": 0.0, "y": 0.0}, "scale": {"x": 1.0, "y": 1.0}, "align": 5,
        "bounds_type": 0, "bounds_align": 0, "bounds": {"x": 0.0, "y": 0.0},
        "crop_left": 0, "crop_top": 0, "crop_right": 0, "crop_bottom": 0}]}},
    {"id": "xshm_input", "versioned_id": "xshm_input", "name": "Game screen", "enabled": true,
     "mixers": 0,
     "settings": {"screen": 0, "show_cursor": false, "advanced": true,
                  "server": ":$(<"$dir/display-game")"}}
  ]
}
EOF
}

# Every PC has two X screens: `obs` (OBS's own windows) and `game` (320x240, only the game
# client), so OBS can record the game screen without its own windows in the picture.
start_xvfb() { # i obs|game
    local i=$1 which=$2 dir ns n t geometry first
    dir=$(pc_dir "$i")
    ns=$(ns_name "$i")
    alive "$dir/xvfb-$which.pid" && [[ -s "$dir/display-$which" ]] && return 0
    geometry=640x480x24
    [[ "$which" == game ]] && geometry=320x240x24
    # An explicit display number, so Xvfb takes the /tmp/.X<n>-lock file: that lock is what
    # keeps X servers in different network namespaces apart (`-displayfd` only probes sockets,
    # and abstract sockets are per namespace, so it would reuse a display number in use on the
    # host and replace its /tmp/.X11-unix socket). `-nolisten unix` leaves /tmp/.X11-unix alone:
    # the PC's programs reach Xvfb by its abstract socket inside the namespace. 200+ stays clear
    # of xvfb-run's range; the number used last time is tried first (OBS's scene names it).
    first=200
    [[ -s "$dir/display-$which" ]] && first=$(<"$dir/display-$which")
    rm -f "$dir/display-$which"
    local tries=0
    for n in "$first" $(seq 200 399); do
        [[ -e "/tmp/.X$n-lock" ]] && continue
        start_in_ns "$ns" "$dir/xvfb-$which.pid" "$dir/xvfb-$which.log" \
            Xvfb ":$n" -screen 0 "$geometry" -nolisten tcp -nolisten unix
        for ((t = 0; t < 100; t++)); do
            alive "$dir/xvfb-$which.pid" || break
            if ip netns exec "$ns" ss -xlH 2>/dev/null | grep -q "@/tmp/.X11-unix/X$n "; then
                echo "$n" >"$dir/display-$which"
                return 0
            fi
            sleep 0.1
        done
        # Lost a race for this display (or Xvfb is broken): try another, a bounded number of times.
        stop_groups TERM 2 "Xvfb" "$dir/xvfb-$which.pid"
        ((++tries < 5)) || break
    done
    die "Xvfb ($which screen) for pc$i did not start (see $dir/xvfb-$which.log)"
}

start_obs() { # i
    local i=$1 dir ns
    dir=$(pc_dir "$i")
    ns=$(ns_name "$i")
    alive "$dir/obs.pid" && return 0
    seed_obs "$i"
    start_in_ns "$ns" "$dir/obs.pid" "$dir/obs.log" \
        env HOME="$dir/home" XDG_CONFIG_HOME="$dir/config" DISPLAY=":$(<"$dir/display-obs")" \
        LIBGL_ALWAYS_SOFTWARE=1 QT_QPA_PLATFORM=xcb \
        "$OBS_BIN" --multi --minimize-to-tray --disable-missing-files-check
}

start_client() { # i
    local i=$1 dir ns
    dir=$(pc_dir "$i")
    ns=$(ns_name "$i")
    alive "$dir/client.pid" && return 0
    mkdir -p "$dir/home/.oa"
    # Own home = own qkey = own GUID (two clients sharing a GUID are rejected). The client keeps
    # resending its challenge until the server (launched later by oa-run) answers.
    start_in_ns "$ns" "$dir/client.pid" "$dir/client.log" \
        env HOME="$dir/home" DISPLAY=":$(<"$dir/display-game")" SDL_AUDIODRIVER=dummy LIBGL_ALWAYS_SOFTWARE=1 \
        "$OA_CLIENT" +set fs_homepath "$dir/home/.oa" +set r_mode -1 +set r_customwidth 320 \
        +set r_customheight 240 +set r_fullscreen 0 +set s_initsound 0 +set com_maxfps 10 \
        +set name "Player$i" +connect "$HOST_IP:$LAB_SERVER_PORT"
}

stop_pcs() { # i...
    local i files
    files=()
    for i in "$@"; do files+=("$(pc_dir "$i")/client.pid"); done
    stop_groups TERM 2 "game client(s)" "${files[@]}"
    # SIGINT is OBS's clean exit (a running recording is finalised); SIGTERM would cut the file.
    files=()
    for i in "$@"; do files+=("$(pc_dir "$i")/obs.pid"); done
    stop_groups INT 15 "OBS" "${files[@]}"
    files=()
    for i in "$@"; do files+=("$(pc_dir "$i")/xvfb-obs.pid" "$(pc_dir "$i")/xvfb-game.pid"); done
    stop_groups TERM 5 "Xvfb" "${files[@]}"
}

# --- commands ----------------------------------------------------------------------------------

cmd_up() {
    need_root up
    local prog
    for prog in ip setsid Xvfb "$OBS_BIN"; do
        command -v "$prog" >/dev/null || die "$prog is not installed (apt-get install -y iproute2 util-linux xvfb obs-studio)"
    done
    if [[ "$LAB_CLIENTS" == 1 ]]; then
        [[ -x "$OA_CLIENT" ]] || die "$OA_CLIENT is not installed (apt-get install -y openarena)"
    fi
    # A smaller lab than last time: take the extra PCs down first.
    if [[ -n "$PREV_PLAYERS" ]]; then
        local j
        for ((j = LAB_PLAYERS + 1; j <= PREV_PLAYERS; j++)); do
            stop_pcs "$j"
            ip netns del "$(ns_name "$j")" 2>/dev/null || true
        done
    fi
    local t0=$SECONDS
    UP_STARTED=1
    mkdir -p "$LAB_DIR"
    cat >"$LAB_DIR/lab.env" <<EOF
LAB_PLAYERS=$LAB_PLAYERS
LAB_NAME=$LAB_NAME
LAB_NET=$LAB_NET
LAB_SERVER_PORT=$LAB_SERVER_PORT
OBS_PORT=$OBS_PORT
EOF
    net_up
    local i
    for ((i = 1; i <= LAB_PLAYERS; i++)); do
        mkdir -p "$(pc_dir "$i")/home"
        start_xvfb "$i" game
        start_xvfb "$i" obs
        start_obs "$i"
        [[ "$LAB_CLIENTS" == 1 ]] && start_client "$i"
    done
    wait_obs
    log "lab up in $((SECONDS - t0))s: $LAB_PLAYERS PCs, every OBS answers"
    cmd_status
}

# Wait for every OBS websocket port, from the host side (as oa-run will connect).
wait_obs() {
    local deadline=$((SECONDS + LAB_OBS_TIMEOUT)) ready i
    while :; do
        ready=0
        for ((i = 1; i <= LAB_PLAYERS; i++)); do
            alive "$(pc_dir "$i")/obs.pid" || die "OBS on pc$i exited (see $(pc_dir "$i")/obs.log)"
            port_answers "$(player_ip "$i")" "$OBS_PORT" && ready=$((ready + 1))
        done
        ((ready == LAB_PLAYERS)) && break
        ((SECONDS < deadline)) || die "only $ready/$LAB_PLAYERS OBS answered on port $OBS_PORT within ${LAB_OBS_TIMEOUT}s (logs: $LAB_DIR/pc*/obs.log)"
        sleep 0.5
    done
}

# A fresh OBS on every PC. Real OBS 29 can wedge in STOPPING after a number of start/stop cycles
# in one instance (obs-studio #2869, #9363); the lab tests start each phase, a study of its own,
# with fresh instances, as a lab would between sessions. SIGINT lets a running recording finish.
cmd_obs() {
    need_root obs
    [[ -f "$LAB_DIR/lab.env" ]] || die "no lab at $LAB_DIR; run: $0 up"
    local i files=()
    for ((i = 1; i <= LAB_PLAYERS; i++)); do files+=("$(pc_dir "$i")/obs.pid"); done
    stop_groups INT 15 "OBS" "${files[@]}"
    for ((i = 1; i <= LAB_PLAYERS; i++)); do
        start_xvfb "$i" obs
        start_obs "$i"
    done
    wait_obs
    log "$LAB_PLAYERS OBS (re)started; every OBS answers"
}

cmd_clients() {
    need_root clients
    [[ -f "$LAB_DIR/lab.env" ]] || die "no lab at $LAB_DIR; run: $0 up"
    local i files=()
    for ((i = 1; i <= LAB_PLAYERS; i++)); do files+=("$(pc_dir "$i")/client.pid"); done
    stop_groups TERM 2 "game client(s)" "${files[@]}"
    for ((i = 1; i <= LAB_PLAYERS; i++)); do
        start_xvfb "$i" game
        start_client "$i"
    done
    log "$LAB_PLAYERS game clients (re)started; they join $HOST_IP:$LAB_SERVER_PORT as soon as the server is up"
}

state() { alive "$1" && echo up || echo -; }

cmd_status() {
    local i dir ns state obs recs
    echo "lab $LAB_NAME at $LAB_DIR: server side $HOST_IP (bridge $BRIDGE), game port $LAB_SERVER_PORT, OBS port $OBS_PORT"
    printf '%-5s %-14s %-12s %-5s %-4s %-6s %-8s %s\n' PC NAMESPACE IP XVFB OBS CLIENT OBS-PORT RECORDINGS
    for ((i = 1; i <= LAB_PLAYERS; i++)); do
        dir=$(pc_dir "$i")
        ns=$(ns_name "$i")
        obs=-
        port_answers "$(player_ip "$i")" "$OBS_PORT" && obs=answers
        recs=$(find "$dir/recordings" -maxdepth 1 -type f 2>/dev/null | wc -l)
        printf '%-5s %-14s %-12s %-5s %-4s %-6s %-8s %s\n' "pc$i" \
            "$(ip netns list | grep -q "^$ns\b" && echo "$ns" || echo '(none)')" "$(player_ip "$i")" \
            "$(state "$dir/xvfb-game.pid")" "$(state "$dir/obs.pid")" "$(state "$dir/client.pid")" \
            "$obs" "$recs files in $dir/recordings"
    done
}

cmd_down() {
    need_root down
    local dir i pcs=()
    for dir in "$LAB_DIR"/pc*; do
        [[ -d "$dir" ]] || continue
        i=${dir##*/pc}
        [[ "$i" =~ ^[0-9]+$ ]] && pcs+=("$i")
    done
    ((${#pcs[@]} == 0)) || stop_pcs "${pcs[@]}"
    net_down
    rm -f "$LAB_DIR/lab.env"
    if [[ "${LAB_PURGE:-0}" == 1 ]]; then
        rm -rf "$LAB_DIR"
        log "lab down; $LAB_DIR deleted"
    else
        log "lab down; recordings kept under $LAB_DIR/pc*/recordings (LAB_PURGE=1 deletes $LAB_DIR)"
    fi
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    clients) cmd_clients ;;
    obs) cmd_obs ;;
    *)
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
        exit 2
        ;;
esac
