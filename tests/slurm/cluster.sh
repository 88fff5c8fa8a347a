#!/usr/bin/env bash
# A single-node SLURM cluster on localhost for the cluster test: `cluster.sh start|stop|status`.
# Installs Debian's slurm-wlm and munge when missing (needs root and the Debian archive).
set -euo pipefail
STATE=${SLURM_TEST_STATE:-/tmp/prepost-slurm}
HOST=$(hostname -s)
CONF_DIR=/etc/slurm

install() {
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
    fi
}

start() {
    install
    mkdir -p "$STATE"/{spool,ctld,log} "$CONF_DIR" /run/munge /var/log/munge /var/lib/munge
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    fi
    chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
    chmod 400 /etc/munge/munge.key
    pgrep -x munged >/dev/null || su -s /bin/sh munge -c "/usr/sbin/munged"
    local mem cpus
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    [ "$mem" -gt 16000 ] && mem=16000
    cat > "$CONF_DIR/slurm.conf" <<CONF
ClusterName=prepost-test
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
    pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
    pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
    for _ in $(seq 1 30); do
        if sinfo -h -o "%T" 2>/dev/null | grep -Eq "idle|mixed|alloc"; then
            sinfo
            return 0
        fi
        sleep 1
    done
    echo "SLURM did not come up; logs in $STATE/log" >&2
    tail -n 20 "$STATE"/log/*.log >&2 || true
    return 1
}

stop() {
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
    pkill -x munged 2>/dev/null || true
    # slurmctld saves its state on SIGTERM: remove the folder once the daemons have exited
    for _ in $(seq 1 50); do
        pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || pgrep -x munged >/dev/null || break
        sleep 0.2
    done
    rm -rf "$STATE" 2>/dev/null || true
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
