# shellcheck shell=bash
# How this project starts and stops the LXD daemon when systemd is not init: shared by
# scripts/setup and scripts/lxd-restart, so a restart starts LXD exactly as setup does.
# Sourced after common.sh. Callers set LOGFILE; the knobs below have setup's defaults.

LXD_GROUP=${LXD_GROUP:-${IOTGW_LXD_GROUP:-root}}
LXD_LOGDIR=${LXD_LOGDIR:-/var/log/lxd}
LXD_PIDFILE=${LXD_PIDFILE:-/run/iotgw-lxd.pid}
LXD_LOGOFFSET=${LXD_LOGOFFSET:-/run/iotgw-lxd.logoffset}
# What LXD runs to start a container (packaging/lxd-exec/lxd-exec.c, built by scripts/setup): its
# `[lxc monitor]` then keeps 0.4 MB per container instead of LXD's 11 MB. IOTGW_LXD_EXEC=lxd starts LXD
# with its own binary there instead (to compare).
LXD_EXEC=${LXD_EXEC:-${IOTGW_LXD_EXEC:-/usr/local/lib/iot-gateway/lxd-exec}}

# The LXD_EXEC_PATH the daemon should have: empty when IOTGW_LXD_EXEC=lxd.
lxd_exec_wanted() { [[ $LXD_EXEC == lxd ]] || echo "$LXD_EXEC"; }

# The LXD_EXEC_PATH a running daemon has (empty: its own binary).
lxd_exec_of_pid() { tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | sed -n 's/^LXD_EXEC_PATH=//p'; }

systemd_is_init() { [[ -d /run/systemd/system && "$(cat /proc/1/comm 2>/dev/null)" == systemd ]]; }

# PIDs of LXD *daemon* processes (not forkstart/[lxc monitor]/waitready helpers).
lxd_daemon_pids() {
  local d exe args
  for d in /proc/[0-9]*; do
    exe=$(readlink "$d/exe" 2>/dev/null) || continue
    [[ $exe == /usr/bin/lxd || $exe == "/usr/bin/lxd (deleted)" ]] || continue
    args=()
    mapfile -d '' -t args <"$d/cmdline" 2>/dev/null || continue
    ((${#args[@]})) || continue
    [[ ${args[0]##*/} == lxd ]] || continue
    if ((${#args[@]} == 1)) || [[ ${args[1]} == -* ]]; then
      echo "${d#/proc/}"
    fi
  done
}

stop_lxd_pids() {
  local pids=("$@") p i
  ((${#pids[@]})) || return 0
  # SIGTERM makes LXD exit WITHOUT stopping containers (only SIGPWR / `lxd shutdown` stops them).
  kill -TERM "${pids[@]}" 2>/dev/null || true
  kill -CONT "${pids[@]}" 2>/dev/null || true # in case it was stopped (SIGSTOP/ptrace)
  for ((i = 0; i < 30; i++)); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.5
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
  sleep 1
}

start_lxd() {
  local offset pid
  offset=$(stat -c %s "$LXD_LOGDIR/lxd.log" 2>/dev/null || echo 0)
  if systemd_is_init; then
    run "systemctl start lxd" systemctl start lxd.socket lxd.service
  else
    mkdir -p "$LXD_LOGDIR" /var/lib/lxd
    getent group "$LXD_GROUP" >/dev/null || die "group '$LXD_GROUP' (IOTGW_LXD_GROUP) does not exist"
    # Stale sockets from a killed daemon make the new one fail/confuse clients.
    rm -f /var/lib/lxd/unix.socket /var/lib/lxd/devlxd/sock
    if [[ -x /usr/libexec/lxd/lxd-apparmor-load ]]; then
      /usr/libexec/lxd/lxd-apparmor-load >>"$LOGFILE" 2>&1 || warn "lxd-apparmor-load failed (continuing)"
    fi
    local exec_path
    exec_path=$(lxd_exec_wanted)
    [[ -z $exec_path || -x $exec_path ]] || die "$exec_path (IOTGW_LXD_EXEC) is missing: scripts/setup builds it"
    (
      exec 9>&- # do not leak our lock fd into the daemon (it would hold the lock forever)
      ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || true
      cd /
      exec setsid nohup env -i PATH="$PATH" HOME=/root LANG=C.UTF-8 ${exec_path:+LXD_EXEC_PATH="$exec_path"} \
        /usr/bin/lxd --group "$LXD_GROUP" --logfile "$LXD_LOGDIR/lxd.log" \
        </dev/null >>"$LXD_LOGDIR/lxd.stdout.log" 2>&1
    ) &
    echo $! >"$LXD_PIDFILE"
    disown $! 2>/dev/null || true
  fi
  if ! timeout 90 lxd waitready --timeout 60 >>"$LOGFILE" 2>&1 || ! lxd_answers 10; then
    echo "---- tail of $LXD_LOGDIR/lxd.log ----" >>"$LOGFILE"
    tail -n 20 "$LXD_LOGDIR/lxd.log" >>"$LOGFILE" 2>/dev/null || true
    tail -n 20 "$LXD_LOGDIR/lxd.stdout.log" >>"$LOGFILE" 2>/dev/null || true
    die "LXD did not become ready within 60s (see $LXD_LOGDIR/lxd.log and lxd.stdout.log)"
  fi
  pid=$(lxd_get /1.0 | jq -r '.environment.server_pid')
  echo "$pid $offset" >"$LXD_LOGOFFSET"
}

