#!/usr/bin/env bash
# A real single-node SLURM for the batch-system tests (Debian, root, no systemd).
#
#   bash scripts/slurm.sh start    # idempotent: install, configure, start; prints the partition
#   bash scripts/slurm.sh status   # exit 0 when munge, slurmctld and the node are up
#   bash scripts/slurm.sh stop     # cancel jobs, scontrol shutdown, stop munged by its PID
#
# There is no systemd here, so package post-install scripts start nothing: this script runs
# munged, slurmctld and slurmd itself. PID 1 does not reap daemons, so a dead daemon can stay a
# zombie that pgrep still lists: liveness is checked with `munge -n` and `scontrol ping`, never
# with pgrep. Every wait is bounded (with munge down, sinfo retries for minutes).
#
# Settings (environment): PSDIST_SLURM_PARTITION (default debug), PSDIST_SLURM_WAIT (seconds a
# daemon may take to come up, default 30).
set -euo pipefail

PARTITION=${PSDIST_SLURM_PARTITION:-debug}
WAIT=${PSDIST_SLURM_WAIT:-30}
CONF=/etc/slurm/slurm.conf
KEY=/etc/munge/munge.key
MUNGE_PID=/run/munge/munged.pid
PACKAGES=(slurmctld slurmd slurm-client munge)

log() { echo "slurm.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# Bounded client calls: with munge or slurmctld down these retry for a long time.
q() { timeout 5 "$@" 2>/dev/null; }
munge_ok() { command -v munge >/dev/null && q munge -n </dev/null | q unmunge >/dev/null; }
ctld_ok() { q scontrol ping | grep -q "is UP"; }
node_state() { q sinfo -h -N -o %T | head -n1; }   # idle, mixed, allocated, down*, unk* ...
node_ok() { case "$(node_state)" in idle|mixed|allocated|completing) return 0 ;; *) return 1 ;; esac; }

alive() {  # alive PIDFILE: the process runs and is not a zombie
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  [ -r "/proc/$pid/stat" ] || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat")" != Z ]
}

wait_for() {  # wait_for WHAT CHECK...: poll CHECK for at most $WAIT seconds
  local what=$1 i
  shift
  for ((i = 0; i < WAIT * 5; i++)); do
    "$@" && return 0
    sleep 0.2
  done
  die "$what did not come up within ${WAIT}s; see /var/log/slurm/ and /var/log/munge/"
}

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "packages ${missing[*]} are missing; run as root (apt-get install)"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

start_munge() {
  munge_ok && return 0
  mkdir -p /etc/munge /run/munge /var/log/munge /var/lib/munge
  if [ ! -s "$KEY" ]; then
    dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none
  fi
  chown munge:munge "$KEY" /run/munge /var/log/munge /var/lib/munge /etc/munge
  chmod 400 "$KEY"
  chmod 755 /run/munge
  if alive "$MUNGE_PID"; then kill "$(cat "$MUNGE_PID")" 2>/dev/null || true; fi
  # --force: start even if a dead munged left its socket behind
  runuser -u munge -- /usr/sbin/munged --force
  wait_for munged munge_ok
}

write_conf() {
  local host cpus mem_mib
  host=$(hostname -s)
  cpus=$(nproc)
  mem_mib=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
  mem_mib=$((mem_mib - 1024 > 1024 ? mem_mib - 1024 : mem_mib))  # leave the OS some room
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  local tmp
  tmp=$(mktemp)
  cat >"$tmp" <<EOF
# written by psdist scripts/slurm.sh: one host, one partition, no accounting
ClusterName=psdist
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=5
MinJobAge=60
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem_mib} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
  if ! cmp -s "$tmp" "$CONF"; then
    if ctld_ok; then  # a running controller keeps its old config: restart it with the new one
      log "slurm.conf changed; restarting the daemons"
      q scontrol shutdown || true
      sleep 1
    fi
    install -m 644 "$tmp" "$CONF"
  fi
  rm -f "$tmp"
}

start() {
  install_packages
  start_munge
  write_conf
  if ! ctld_ok; then
    /usr/sbin/slurmctld
    wait_for slurmctld ctld_ok
  fi
  if ! alive /run/slurmd.pid; then
    /usr/sbin/slurmd
  fi
  wait_for "the node (slurmd)" node_ok
  log "up: partition ${PARTITION}, node $(hostname -s) ($(nproc) CPUs), state $(node_state)"
  echo "${PARTITION}"
}

stop() {
  if ctld_ok; then
    q scancel --full --partition "$PARTITION" || true
    q scontrol shutdown || true
    for ((i = 0; i < WAIT * 5; i++)); do ctld_ok || break; sleep 0.2; done
  fi
  for f in /run/slurmd.pid /run/slurmctld.pid "$MUNGE_PID"; do
    if alive "$f"; then kill "$(cat "$f")" 2>/dev/null || true; fi
  done
  for f in /run/slurmd.pid /run/slurmctld.pid "$MUNGE_PID"; do
    for ((i = 0; i < 25; i++)); do alive "$f" || break; sleep 0.2; done
    alive "$f" && kill -9 "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  log "stopped"
}

status() {
  local rc=0
  if munge_ok; then echo "munge: ok"; else echo "munge: down"; rc=1; fi
  if ctld_ok; then echo "slurmctld: up"; else echo "slurmctld: down"; rc=1; fi
  if [ $rc -eq 0 ]; then
    echo "node: $(node_state)"
    node_ok || rc=1
    q sinfo -o "%P %a %D %T %C %G" || true
    echo "jobs: $(q squeue -h | wc -l)"
  fi
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
