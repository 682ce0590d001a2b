#!/usr/bin/env bash
# scripts/lib/bench-worker.sh KIND ARGS...  (used by scripts/bench-seed)
#
# The same workload, run once on the host and once inside the benchmark container (lxc exec ...
# bash -s < this file), so both sides run byte-identical commands. Prints one line: the seconds the
# measured part took (a fixed amount of work, so container/host is a ratio of times, as in the
# reference's 300.7 s vs 300.5 s).
#   cpu THREADS EVENTS            sysbench cpu (primes up to 20000)
#   fileio DIR SIZE EVENTS        sysbench fileio rndrw over SIZE (prepare not timed; cleaned up)
#   db DIR ROWS THREADS...        a throw-away PostgreSQL 15 cluster in DIR; sysbench oltp_insert, ROWS
#                                 rows shared out over the thread counts (rising), one line per count
set -euo pipefail
export LC_ALL=C
kind=$1; shift

total_time() { awk '/total time:/ { gsub("s", "", $3); print $3 }'; }

case $kind in
  cpu)
    sysbench cpu --cpu-max-prime=20000 --threads="$1" --events="$2" --time=0 run | total_time
    ;;
  fileio)
    dir=$1 size=$2 events=$3
    rm -rf "$dir"; mkdir -p "$dir"; cd "$dir"
    sysbench fileio --file-total-size="$size" --file-num=16 prepare >/dev/null
    sync
    sysbench fileio --file-total-size="$size" --file-num=16 --file-test-mode=rndrw --events="$events" --time=0 run | total_time
    sysbench fileio --file-total-size="$size" --file-num=16 cleanup >/dev/null
    cd /; rm -rf "$dir"
    ;;
  db)
    dir=$1 rows=$2; shift 2
    cd /   # postgres' tools start in the working directory (root's home is 0700)
    pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    port=5499
    stop() { runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true; }
    trap 'stop; rm -rf "$dir"' EXIT
    stop; rm -rf "$dir"; mkdir -p "$dir"; chown postgres: "$dir"
    runuser -u postgres -- "$pgbin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
      -o "-p $port -k $dir -c listen_addresses='' -c shared_buffers=128MB" start >/dev/null
    runuser -u postgres -- "$pgbin/createdb" -h "$dir" -p $port sbtest
    common=(--db-driver=pgsql --pgsql-host="$dir" --pgsql-port=$port --pgsql-user=postgres --pgsql-db=sbtest --tables=1)
    sysbench oltp_insert "${common[@]}" --table-size=0 prepare >/dev/null
    per=$((rows / $#))
    for t in "$@"; do
      printf '%s %s\n' "$t" "$(sysbench oltp_insert "${common[@]}" --threads="$t" --events="$per" --time=0 run | total_time)"
    done
    n=$(runuser -u postgres -- psql -h "$dir" -p $port -d sbtest -Atc 'select count(*) from sbtest1')
    [[ $n -eq $((per * $#)) ]] || { echo "bench-worker: expected $((per * $#)) rows, found $n" >&2; exit 1; }
    ;;
  *) echo "bench-worker: unknown kind $kind" >&2; exit 2 ;;
esac
