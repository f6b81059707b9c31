# Shared by the scripts that run `tollgate` servers in the background: `fail`, a temporary
# directory that is removed with every background process on exit, and `start`.
# Source it after setting SCRIPT (the name failures are reported under).

fail() {
    printf '\n%s: FAILED: %s\n' "${SCRIPT:-script}" "$*" >&2
    exit 1
}

work=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in ${pids[@]+"${pids[@]}"}; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# start NAME COMMAND...: runs COMMAND in the background and waits up to 10 s for it to print
# "listening on URL"; sets $url.
start() {
    local name=$1 pid i
    shift
    # There before it is read below: the background command creates it only once it runs.
    : >"$work/$name.out"
    "$@" >"$work/$name.out" 2>"$work/$name.log" &
    pid=$!
    pids+=("$pid")
    for i in $(seq 100); do
        url=$(sed -n 's/^listening on //p' "$work/$name.out")
        [ -n "$url" ] && return 0
        kill -0 "$pid" 2>/dev/null || fail "$name exited before listening: $(cat "$work/$name.log")"
        sleep 0.1
    done
    fail "$name did not print its address within 10 s: $(cat "$work/$name.log")"
}
