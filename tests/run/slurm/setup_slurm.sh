#!/usr/bin/env bash
# A single-node Slurm on this machine for tests/run/test_slurm.py: installs Debian's munge,
# slurmctld, slurmd and slurm-client when missing, writes a slurm.conf for this host (its real
# CPU count and memory), starts munged, slurmctld and slurmd without systemd, and waits until
# `sinfo` shows the node idle. Safe to run again: what is already there is reused.
# `bash setup_slurm.sh stop` ends the three daemons.
#
# Needs root on Debian or Ubuntu. Jobs are tracked by process list, not cgroups
# (proctrack/linuxproc, task/none), so it also runs in containers without systemd. There is no
# accounting database: `sacct` answers with an error, which submitit tolerates (it reads each
# job's result file).
#
# An /etc/slurm/slurm.conf that this script did not write is never touched: the script stops.
set -euo pipefail

MARK="# medqbench single-node test cluster (tests/run/slurm/setup_slurm.sh)"
CONF=/etc/slurm/slurm.conf
LOGS=/var/log/slurm
WAIT_S=${SLURM_SETUP_WAIT_S:-60}

say() { echo "setup_slurm: $*" >&2; }
fail() { say "$*"; exit 1; }

node_idle() {
    sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'
}

alive() {  # alive PIDFILE: the daemon it names runs (not a zombie, nor a later process)
    local pid stat comm state
    [[ -s $1 ]] && pid=$(cat "$1") && stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    comm=${stat#*\(} && comm=${comm%%\)*}  # /proc/PID/stat: "PID (COMM) STATE ..."
    state=${stat##*\) } && state=${state%% *}
    [[ $state != Z && $comm == "$(basename "$1" .pid)" ]]
}

stop() {  # stop PIDFILE: end the daemon this script started
    if alive "$1"; then
        kill "$(cat "$1")"
        for _ in $(seq 50); do alive "$1" || return 0; sleep 0.1; done
        fail "the process in $1 did not stop"
    fi
}

install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || fail "installing ${missing[*]} needs root (run as root or install them)"
    command -v apt-get >/dev/null || fail "no apt-get: install ${missing[*]} with this system's package manager"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    local log
    log=$(mktemp -t setup_slurm.apt.XXXXXX)
    apt-get update -qq >"$log" 2>&1 || fail "apt-get update failed: $(tail -n 2 "$log")"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1 \
        || fail "apt-get install ${missing[*]} failed: $(tail -n 2 "$log")"
    rm -f "$log"
}

CHANGED=0
write_conf() {  # sets CHANGED=1 when the file was (re)written
    local host hw
    host=$(hostname -s)
    # slurmd's own reading of the CPUs, sockets and memory, so the node is never rejected
    hw=$(slurmd -C | sed -n 's/^NodeName=[^ ]* \(.*RealMemory=[0-9]*\).*/\1/p')
    [[ -n $hw ]] || fail "slurmd -C did not report the CPUs and memory: $(slurmd -C 2>&1 | head -n 1)"
    local new
    new=$(cat <<EOF
$MARK
ClusterName=medqbench
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
    if [[ -f $CONF ]] && [[ $(cat "$CONF") == "$new" ]]; then
        return 0
    fi
    mkdir -p "$(dirname "$CONF")"
    printf '%s\n' "$new" > "$CONF"
    CHANGED=1
}

start_munge() {
    local pidfile=/run/munge/munged.pid
    alive "$pidfile" && return 0
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
            || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged || fail "munged did not start (see /var/log/munge/munged.log)"
    munge -n | unmunge >/dev/null || fail "munge cannot encode and decode a credential"
}

main() {
    if [[ -f $CONF ]] && [[ $(head -n 1 "$CONF") != "$MARK" ]]; then
        fail "$CONF belongs to another Slurm setup (its first line is not \"$MARK\"); leaving it"
    fi
    if [[ ${1:-} == stop ]]; then
        stop /run/slurmd.pid
        stop /run/slurmctld.pid
        stop /run/munge/munged.pid
        say "stopped"
        return 0
    fi
    install_packages
    mkdir -p "$LOGS" /var/spool/slurmctld /var/spool/slurmd
    write_conf
    if ((CHANGED)); then
        stop /run/slurmd.pid
        stop /run/slurmctld.pid
    fi
    start_munge
    alive /run/slurmctld.pid || slurmctld || fail "slurmctld did not start: $(tail -n 3 $LOGS/slurmctld.log)"
    alive /run/slurmd.pid || slurmd || fail "slurmd did not start: $(tail -n 3 $LOGS/slurmd.log)"
    local deadline=$((SECONDS + WAIT_S))
    until node_idle; do
        if ((SECONDS > deadline)); then
            fail "the node is not idle after ${WAIT_S} s: $(sinfo -h -N -o '%N %T %E' 2>&1 | head -n 3);" \
                "slurmctld: $(tail -n 2 $LOGS/slurmctld.log); slurmd: $(tail -n 2 $LOGS/slurmd.log)"
        fi
        sleep 1
    done
    say "ready: $(sinfo -h -N -o '%N %T %c CPUs %m MB')"
}

main "$@"
