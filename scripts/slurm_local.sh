#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for the cluster tests: installs slurm-wlm and munge when missing
# (scripts/install_system_deps.sh),
# writes a slurm.conf for node "localhost", and starts munged, slurmctld and slurmd (no systemd needed).
# Usage: scripts/slurm_local.sh start | stop | status
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
conf=/etc/slurm/slurm.conf
state=/var/spool/slurmctld
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))

up() { timeout 5 sinfo -h -o %T 2>/dev/null | grep -q -E "idle|mixed|alloc"; }

start() {
    if up; then echo "slurm: already up"; return 0; fi
    command -v slurmctld >/dev/null && command -v munged >/dev/null || "$here/install_system_deps.sh"
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        echo "slurm: slurm-wlm and munge are not installed and could not be (see scripts/system-packages.txt)" >&2
        return 1
    fi
    mkdir -p /etc/slurm "$state" /var/spool/slurmd /var/log/slurm /run/munge
    chown munge:munge /run/munge
    [ -s /etc/munge/munge.key ] || { /usr/sbin/mungekey -c 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; }
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    cat > "$conf" <<CONF
ClusterName=lyria-local
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
SchedulerType=sched/backfill
MinJobAge=600
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
    pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged
    pgrep -x slurmctld >/dev/null || slurmctld -c -i
    pgrep -x slurmd >/dev/null || slurmd -N localhost
    for _ in $(seq 30); do up && { echo "slurm: up ($cpus CPUs, node localhost)"; return 0; }; sleep 1; done
    echo "slurm: the daemons did not come up; see /var/log/slurm/" >&2
    return 1
}

stop() {
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    echo "slurm: stopped"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) up && echo "slurm: up" || { echo "slurm: down"; exit 1; } ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
