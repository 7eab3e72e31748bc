#!/usr/bin/env bash
# Checks the binary against packaging/hbroker.service's hardening, as far as it can be checked
# without systemd running (docs/deployment.md, "The hardening, and how far it was checked").
#
#   sudo bash tools/check-hardening.sh [dist/hbroker]
#
# 1. systemd-analyze verify and security --offline on the unit (ExecStart= pointed at the binary).
# 2. The broker in a sandbox that imitates the unit: a mount namespace with / read-only, a
#    private executable /tmp, empty /root and /home, /proc with subset=pid and
#    hidepid=invisible, one writable state directory; user nobody without capabilities and
#    with no-new-privileges (setpriv); the kernel's PR_SET_MDWE, which is what
#    MemoryDenyWriteExecute= enforces. Under strace: start, retained publish, subscribe,
#    SIGHUP, SIGTERM (exit 0); then a second start that must still hold the retained message.
# 3. Every system call of the traced run must be in @system-service minus @privileged, and
#    every socket AF_INET, AF_INET6 or AF_UNIX (RestrictAddressFamilies=).
# Needs root (namespaces), unshare, setpriv, strace, systemd-analyze, mosquitto_pub/sub and
# /usr/bin/python3 (outside /root, which the sandbox hides). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
binary=$(realpath "${1:-dist/hbroker}")
[ "$(id -u)" -eq 0 ] || { echo "check-hardening: needs root (mount namespaces)"; exit 2; }
for tool in unshare setpriv strace systemd-analyze mosquitto_pub mosquitto_sub /usr/bin/python3; do
    command -v "$tool" >/dev/null || { echo "check-hardening: $tool is missing"; exit 2; }
done

work=$(mktemp -d /var/tmp/hbroker-hardening-XXXXXX)
chmod 0755 "$work"
trap 'rm -rf "$work"' EXIT
mkdir "$work/bin" "$work/state"
cp "$binary" "$work/bin/hbroker"
chown nobody "$work/state"

echo "== 1. the unit"
sed "s#/usr/local/bin/hbroker#$work/bin/hbroker#" packaging/hbroker.service >"$work/hbroker.service"
systemd-analyze verify "$work/hbroker.service"
systemd-analyze security --offline=true "$work/hbroker.service" | tail -1

echo "== 2. the broker in a sandbox imitating the unit"
port=$(.venv/bin/python - "$work" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "tools")
import binary_startup as b
port = b.free_port()
b.gateway_config(Path(sys.argv[1]), port)  # database in $work/state
print(port)
EOF
)
cat >"$work/mdwe_exec.py" <<'EOF'
import ctypes, os, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0):
    raise SystemExit(f"PR_SET_MDWE: {os.strerror(ctypes.get_errno())} (Linux 6.3 or newer)")
os.execv(sys.argv[1], sys.argv[1:])
EOF
# sandbox.sh WORK COMMAND...: run COMMAND as the unit would.
cat >"$work/sandbox.sh" <<'EOF'
work=$1; shift
exec unshare -m --propagation private bash -c '
    set -e
    mount --bind "$0/state" "$0/state"
    mount -t proc -o subset=pid,hidepid=invisible proc /proc
    mount -o bind,remount,ro /
    mount -t tmpfs -o mode=1777 tmpfs /tmp
    mount -t tmpfs tmpfs /root
    mount -t tmpfs tmpfs /home
    cd "$0/state"
    exec setpriv --reuid=nobody --regid=nogroup --clear-groups --no-new-privs \
        --inh-caps=-all --bounding-set=-all /usr/bin/python3 "$0/mdwe_exec.py" "$@"
' "$work" "$@"
EOF
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "check-hardening: the broker did not listen"; cat "$work/broker.log"; exit 1
}
run_round() {  # run_round N: start, exercise, SIGHUP, SIGTERM; exit code 0 required
    local trace=()
    [ "$1" = 1 ] && trace=(strace -f -qq -o "$work/strace.out")
    "${trace[@]}" bash "$work/sandbox.sh" "$work" \
        "$work/bin/hbroker" serve -c "$work/hbroker.toml" >>"$work/broker.log" 2>&1 &
    local pid=$!
    wait_port
    [ "$1" = 1 ] && mosquitto_pub -V 5 -p "$port" -t hardening/state -m kept -r -q 1
    got=$(mosquitto_sub -V 5 -p "$port" -t hardening/state -C 1 -W 5)
    [ "$got" = kept ] || { echo "round $1: got '$got'"; cat "$work/broker.log"; exit 1; }
    local launcher  # the oldest process of the binary: systemd's main PID
    launcher=$(pgrep -o -f "^$work/bin/hbroker serve")
    kill -HUP "$launcher"
    sleep 0.5
    kill -TERM "$launcher"
    wait "$pid" || { echo "round $1: exit code $?"; cat "$work/broker.log"; exit 1; }
    [ "$(grep -c "SIGHUP: configuration reloaded" "$work/broker.log")" = "$1" ]
    echo "round $1: served, reloaded on SIGHUP, exit 0 on SIGTERM"
}
run_round 1
run_round 2

echo "== 3. system calls and socket families of round 1"
/usr/bin/python3 - "$work/strace.out" "$work/bin/hbroker" <<'EOF'
import re, subprocess, sys
trace = open(sys.argv[1]).read()
trace = trace[trace.index(f'execve("{sys.argv[2]}"'):]  # from the binary's exec on
used = set(re.findall(r"^\d+\s+([a-z_0-9]+)\(", trace, re.MULTILINE))
families = set(re.findall(r"socket\((AF_[A-Z0-9]+)", trace))
cache = {}
def expand(group):
    if group not in cache:
        out = subprocess.run(["systemd-analyze", "syscall-filter", group],
                             capture_output=True, text=True, check=True).stdout
        names = set()
        for line in (x.strip() for x in out.splitlines()[1:]):
            if line and not line.startswith("#"):
                names |= expand(line) if line.startswith("@") else {line}
        cache[group] = names
    return cache[group]
denied = used - (expand("@system-service") - expand("@privileged"))
bad_families = families - {"AF_INET", "AF_INET6", "AF_UNIX"}
print(f"{len(used)} system calls, socket families {sorted(families)}")
if denied or bad_families:
    raise SystemExit(f"outside the unit's filters: {sorted(denied)} {sorted(bad_families)}")
print("all within @system-service minus @privileged and RestrictAddressFamilies=")
EOF
echo "check-hardening: passed"
