# shellcheck shell=bash
# Shared helpers for scripts/setup, scripts/build-image and scripts/smoke-test.
# Sourced, not executed. Callers must set PROG (short name used in messages)
# and LOGFILE (where noisy command output goes) before using run().

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C.UTF-8
export DEBIAN_FRONTEND=noninteractive

LXD_DIR_DEFAULT=/var/lib/lxd
LXD_SOCKET=${LXD_SOCKET:-$LXD_DIR_DEFAULT/unix.socket}

# One short line per step on stdout.
say() { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: WARNING: %s\n' "$PROG" "$*" >&2; }

# Fail loudly: message, then the tail of the log if there is one.
die() {
  printf '%s: ERROR: %s\n' "$PROG" "$*" >&2
  if [[ -n "${LOGFILE:-}" && -s "${LOGFILE:-}" && -z "${_IOTGW_LOG_SHOWN:-}" ]]; then
    _IOTGW_LOG_SHOWN=1
    printf '%s: ---- last 40 lines of %s ----\n' "$PROG" "$LOGFILE" >&2
    tail -n 40 "$LOGFILE" >&2 || true
    printf '%s: ---- end of log ----\n' "$PROG" >&2
  fi
  exit 1
}

# Any unexpected failing command (set -e) ends up here with a location.
_iotgw_err_trap() {
  local rc=$? line=${BASH_LINENO[0]} cmd=$BASH_COMMAND
  die "unexpected failure (exit $rc) at ${BASH_SOURCE[1]:-?}:$line: $cmd"
}
install_err_trap() { set -E; trap _iotgw_err_trap ERR; }

# run "description" cmd args... : output to $LOGFILE, loud failure with log tail.
run() {
  local desc=$1; shift
  printf '\n### %s: %s\n### $ %s\n' "$(date '+%F %T')" "$desc" "$*" >>"$LOGFILE"
  local rc=0
  "$@" >>"$LOGFILE" 2>&1 </dev/null || rc=$?
  if [[ $rc -ne 0 ]]; then
    die "$desc failed (exit $rc): $*"
  fi
}

need_root() { [[ $EUID -eq 0 ]] || { printf '%s: ERROR: must run as root\n' "$PROG" >&2; exit 1; }; }

# Take an exclusive lock for the rest of the script (fd 9). Waits up to $2 s.
take_lock() {
  local file=$1 timeout=${2:-600}
  mkdir -p "$(dirname "$file")"
  exec 9>"$file"
  if flock -n 9; then return 0; fi
  say "waiting for another running instance (lock $file)"
  if ! flock -w "$timeout" 9; then
    die "another instance holds $file for more than ${timeout}s"
  fi
}

# Does the LXD socket answer API requests?
lxd_answers() {
  [[ -S "$LXD_SOCKET" ]] || return 1
  curl -fsS --max-time "${1:-5}" --unix-socket "$LXD_SOCKET" http://unix.socket/1.0 >/dev/null 2>&1
}

# GET an LXD API path, print the JSON metadata (errors -> non-zero, nothing printed).
lxd_get() {
  local out
  out=$(curl -sS --max-time 30 --unix-socket "$LXD_SOCKET" "http://unix.socket$1" 2>/dev/null) || return 1
  jq -e '.type == "sync" and .error_code == 0' <<<"$out" >/dev/null 2>&1 || return 1
  jq -c '.metadata' <<<"$out"
}

# pid_of_exe NAME PATTERN: the pid of the process running the executable NAME whose command line matches
# PATTERN (pgrep -f alone also finds a wrapper such as iotgw-devsim, whose arguments name the command).
pid_of_exe() {
  local pid
  for pid in $(pgrep -f "$2"); do
    [ "$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)")" = "$1" ] && { echo "$pid"; return 0; }
  done
  return 1
}
