#!/bin/bash
# A one-node Slurm cluster on this host, for tests (tests/e2e/slurm_e2e_test.cc) and by hand:
#   slurm_cluster.sh start DIR [CPUS]   writes DIR/slurm.conf, starts munged, slurmctld and slurmd
#                                       (all with their sockets, state and logs under DIR) and
#                                       waits until the node is idle; prints SLURM_CONF=DIR/slurm.conf
#   slurm_cluster.sh stop DIR           stops what `start DIR` started (by the pids it recorded)
# SlurmUser and SlurmdUser are the caller (tested as root; jobs then run as the caller), and it
# needs Debian's slurmctld, slurmd, slurm-client and munge packages.
# No slurmdbd: accounting is off, so sacct has nothing; a job's state comes from squeue and
# `scontrol show job` while slurmctld remembers it (MinJobAge below), and the job's exit codes
# from the files qatd's batch script writes (deploy/slurm/README.md).
set -euo pipefail

cmd=${1:?usage: slurm_cluster.sh start|stop DIR [CPUS]}
dir=$(realpath -m "${2:?usage: slurm_cluster.sh start|stop DIR [CPUS]}")
cpus=${3:-2}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop() {
  for name in slurmd slurmctld munged; do
    if [[ -f "$dir/$name.pid" ]]; then
      pid=$(cat "$dir/$name.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/$name.pid"
    fi
  done
}

if [[ "$cmd" == stop ]]; then
  stop
  exit 0
fi
[[ "$cmd" == start ]] || { echo "unknown command $cmd" >&2; exit 2; }
for bin in munged slurmctld slurmd sinfo; do
  command -v "$bin" >/dev/null || [[ -x "/usr/sbin/$bin" ]] || { echo "missing $bin" >&2; exit 3; }
done
export PATH="$PATH:/usr/sbin"
mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
chmod 0700 "$dir/munge"
host=$(hostname -s)

# munge: a fresh key (root-owned, 0400) and a daemon with its own socket; --force lets it run as
# root with the key and socket in a temp dir.
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
chmod 0400 "$dir/munge/munge.key"
munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
  --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed"

cat > "$dir/slurm.conf" <<CONF
ClusterName=qatdtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=$(id -un)
SlurmdUser=$(id -un)
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid.conf
SlurmdPidFile=$dir/slurmd.pid.conf
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=3600
KillWait=5
SlurmdTimeout=30
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
export SLURM_CONF="$dir/slurm.conf"

setsid slurmctld -D -f "$SLURM_CONF" >"$dir/log/slurmctld.out" 2>&1 &
echo $! > "$dir/slurmctld.pid"
setsid slurmd -D -f "$SLURM_CONF" -N "$host" >"$dir/log/slurmd.out" 2>&1 &
echo $! > "$dir/slurmd.pid"

for _ in $(seq 1 300); do
  state=$(sinfo -h -N -o '%t' 2>/dev/null | head -1 || true)
  if [[ "$state" == idle ]]; then
    echo "SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.2
done
echo "the Slurm node did not become idle (last state '${state:-none}'); logs in $dir/log" >&2
tail -20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
stop
exit 1
