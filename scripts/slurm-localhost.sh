#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for trying `vilab run --launcher slurm` and for the
# tests in tests/suite/slurm_launcher.rs.
#
#   scripts/slurm-localhost.sh          install (Debian's slurm-wlm and munge) when missing,
#                                       configure, start munged, slurmctld and slurmd, and wait
#                                       until the node is idle; safe to run again
#   scripts/slurm-localhost.sh stop     stop the daemons this script started
#
# Needs root (it installs packages, writes /etc/slurm/slurm.conf, and slurmd runs jobs as
# their users). The configuration suits containers and small VMs: no cgroups (process
# tracking by process group ids, no task binding), no accounting database. Its state, logs
# and pid files live in $VILAB_SLURM_DIR (default: /tmp/vilab-slurm).
set -euo pipefail
# The daemons and runuser live in sbin folders, which not every PATH names.
export PATH="$PATH:/usr/sbin:/sbin"

state_dir="${VILAB_SLURM_DIR:-/tmp/vilab-slurm}"
config=/etc/slurm/slurm.conf
marker="# Written by vilab scripts/slurm-localhost.sh"
munge_socket=/run/munge/munge.socket.2

fail() {
  echo "slurm-localhost: $*" >&2
  exit 1
}

# Whether the daemon of a pid file is alive: not a recycled pid, and not a zombie (a killed
# daemon whose parent was gone stays one until init reaps it, which in a container may never
# happen).
alive() {
  local pid_file=$1 name pid
  name=$(basename "$pid_file" .pid)
  [[ -s "$pid_file" ]] || return 1
  pid=$(cat "$pid_file")
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] \
    && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

stop_daemon() {
  local name=$1 pid_file=$2
  if alive "$pid_file"; then
    kill "$(cat "$pid_file")"
    for _ in $(seq 50); do
      alive "$pid_file" || break
      sleep 0.1
    done
    echo "slurm-localhost: stopped $name"
  fi
  rm -f "$pid_file"
}

if [[ "${1:-}" == "stop" ]]; then
  stop_daemon slurmd "$state_dir/slurmd.pid"
  stop_daemon slurmctld "$state_dir/slurmctld.pid"
  stop_daemon munged "$state_dir/munged.pid"
  exit 0
elif [[ $# -gt 0 ]]; then
  fail "usage: $0 [stop]"
fi

[[ $(id -u) -eq 0 ]] || fail "needs root (installs packages, writes $config, runs slurmd)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
  || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm-localhost: installing slurm-wlm and munge"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurm-wlm munge >/dev/null
fi

host=$(hostname -s)
cpus=$(nproc)
# Leave some memory to the system; jobs that ask for none get the node's share anyway.
memory_mb=$(awk '/MemTotal/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)

mkdir -p "$state_dir/state" "$state_dir/spool"

if [[ -e "$config" ]] && ! grep -qF "$marker" "$config"; then
  fail "$config exists and was not written by this script; not touching a real cluster's configuration"
fi
new_config=$(cat <<EOF
$marker: one node, no cgroups, no accounting.
ClusterName=localhost
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job may start again once its old credential has expired: 120 s by default, 10 s
# here so the requeue tests do not spend minutes waiting (tests/suite/slurm_requeue.rs).
AuthInfo=cred_expire=10
StateSaveLocation=$state_dir/state
SlurmdSpoolDir=$state_dir/spool
SlurmctldPidFile=$state_dir/slurmctld.pid
SlurmdPidFile=$state_dir/slurmd.pid
SlurmctldLogFile=$state_dir/slurmctld.log
SlurmdLogFile=$state_dir/slurmd.log
# Containers often have no writable cgroup tree: track job processes by process group and
# bind no tasks to cores.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
# Cores are handed out one by one, so several one-core jobs share the node.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=10
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
)
config_changed=false
if [[ ! -e "$config" ]] || [[ "$(cat "$config")" != "$new_config" ]]; then
  mkdir -p "$(dirname "$config")"
  printf '%s\n' "$new_config" >"$config"
  config_changed=true
fi

# munged runs as its own user, as Debian's service does; its key comes with the package.
if ! alive "$state_dir/munged.pid"; then
  [[ -s /etc/munge/munge.key ]] || fail "/etc/munge/munge.key is missing (reinstall munge)"
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  runuser -u munge -- munged --socket="$munge_socket" --pid-file=/run/munge/munged.pid
  cp /run/munge/munged.pid "$state_dir/munged.pid"
fi
munge -n -S "$munge_socket" | unmunge -S "$munge_socket" >/dev/null \
  || fail "munge does not work; see /var/log/munge/munged.log"

if $config_changed; then
  # A running daemon would keep the old configuration.
  stop_daemon slurmd "$state_dir/slurmd.pid"
  stop_daemon slurmctld "$state_dir/slurmctld.pid"
fi
if ! alive "$state_dir/slurmctld.pid"; then
  # A fresh queue (-c): jobs of daemons that were killed would otherwise come back as running
  # and hold cores until Slurm gives up on them.
  slurmctld -c || fail "slurmctld did not start; see $state_dir/slurmctld.log"
fi
if ! alive "$state_dir/slurmd.pid"; then
  slurmd || fail "slurmd did not start; see $state_dir/slurmd.log"
fi

for _ in $(seq 60); do
  node_state=$(sinfo --noheader --nodes="$host" --format=%t 2>/dev/null || true)
  case "$node_state" in
    idle | mix | alloc)
      echo "slurm-localhost: node $host is up ($node_state, $cpus CPUs); state in $state_dir"
      exit 0
      ;;
    down* | drain* | drng*)
      scontrol update nodename="$host" state=resume 2>/dev/null || true
      ;;
  esac
  sleep 1
done
fail "node $host is not idle after 60 s (sinfo: ${node_state:-nothing}); see $state_dir/slurmctld.log and $state_dir/slurmd.log"
