#!/usr/bin/env bash
# A throwaway one-node Slurm cluster on this machine, for tests/test_slurm.py.
#
#   cluster.sh start STATE_DIR   munged, slurmctld and slurmd as plain daemons (no systemd), their
#                                state, logs and PID files under STATE_DIR (munged's key and socket
#                                under /tmp/qabench-munge.*); returns once the node takes jobs
#   cluster.sh stop STATE_DIR    cancels the cluster's jobs, stops each daemon by its PID file and
#                                removes the slurm.conf that start wrote
#
# Needs root and the Debian packages munge, slurmctld, slurmd and slurm-client (Slurm 22.05).
# The config must live at /etc/slurm/slurm.conf: the executor plugin clears SLURM_CONF before the
# srun inside each job. start refuses to replace a slurm.conf it did not write.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARKER="qabench-test-cluster"
HERE="$(cd "$(dirname "$0")" && pwd)"

die() { echo "cluster.sh: $*" >&2; exit 1; }

stop_pid_file() {  # stop_pid_file NAME FILE: TERM, then KILL after 15 s
    local name=$1 file=$2 pid
    [[ -s $file ]] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "cluster.sh: $name (pid $pid) ignored TERM, killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}

start() {
    local state=$1
    [[ $(id -u) -eq 0 ]] || die "must run as root (slurmd and munged)"
    for bin in munged slurmctld slurmd sinfo; do
        command -v "$bin" >/dev/null || die "$bin not found: apt-get install munge slurmctld slurmd slurm-client"
    done
    if [[ -e $CONF ]] && ! grep -q "$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script; not replacing it"
    fi
    mkdir -p "$state/slurmctld" "$state/slurmd"

    # munge: a fresh key and a socket of our own, so a system munged (if any) is left alone; munged
    # wants every directory above its socket searchable by all, which pytest's tmp dirs are not
    local munge
    munge=$(mktemp -d /tmp/qabench-munge.XXXXXX)
    chmod 0755 "$munge"
    echo "$munge" > "$state/munge_dir"
    dd if=/dev/urandom of="$munge/munge.key" bs=1024 count=1 status=none
    chmod 0400 "$munge/munge.key"
    munged --key-file="$munge/munge.key" --socket="$munge/munge.socket" --pid-file="$munge/munged.pid" \
        --log-file="$state/munged.log" --seed-file="$munge/munged.seed" \
        || die "munged did not start: see $state/munged.log"

    # the node as slurmd sees it (CPUs, sockets, memory), minus its uptime
    local node host
    node=$(slurmd -C | head -n1 | sed 's/ *UpTime=.*//')
    host=$(hostname -s)
    mkdir -p "$(dirname "$CONF")"
    sed -e "s|@STATE@|$state|g" -e "s|@MUNGE@|$munge|g" -e "s|@HOST@|$host|g" -e "s|@NODE@|$node|" "$HERE/slurm.conf.in" > "$CONF"

    slurmctld -c || die "slurmctld did not start: see $state/slurmctld.log"
    slurmd || die "slurmd did not start: see $state/slurmd.log"
    for _ in $(seq 300); do
        if [[ $(sinfo -h -o %T 2>/dev/null) == idle ]]; then
            return 0
        fi
        sleep 0.2
    done
    die "the node did not become idle within 60 s: see $state/slurmctld.log and $state/slurmd.log"
}

stop() {
    local state=$1
    if [[ -s $state/slurmctld.pid ]] && kill -0 "$(cat "$state/slurmctld.pid")" 2>/dev/null; then
        scancel --full --user "$(id -un)" 2>/dev/null || true  # jobs of this throwaway cluster only
        for _ in $(seq 100); do [[ -z $(squeue -h -t running,completing 2>/dev/null) ]] && break; sleep 0.1; done
    fi
    stop_pid_file slurmd "$state/slurmd.pid"
    stop_pid_file slurmctld "$state/slurmctld.pid"
    if [[ -s $state/munge_dir ]]; then
        local munge
        munge=$(cat "$state/munge_dir")
        if [[ $munge == /tmp/qabench-munge.* ]]; then
            stop_pid_file munged "$munge/munged.pid"
            rm -rf "$munge"
        fi
        rm -f "$state/munge_dir"
    fi
    if [[ -e $CONF ]] && grep -q "$MARKER" "$CONF"; then
        rm -f "$CONF"
    fi
}

[[ $# -eq 2 ]] || die "usage: cluster.sh start|stop STATE_DIR"
state=$(mkdir -p "$2" && cd "$2" && pwd)
case $1 in
    start) start "$state" ;;
    stop) stop "$state" ;;
    *) die "usage: cluster.sh start|stop STATE_DIR" ;;
esac
