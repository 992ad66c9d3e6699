#!/usr/bin/env bash
# What the idle daemon holds: resident memory of a release build, by kind and by mapping.
#
# The daemon follows one source that does not exist, so it retries with backoff as a daemon
# whose engine is down does. Before each run the page cache is dropped (root only), so that no
# page of the binary is resident only because an earlier run read it. After 3 s it serves one
# `/metrics` and one `/`; 1 s later VmRSS, RssAnon and RssFile come from /proc/PID/status and
# each mapping's Rss from /proc/PID/smaps. Prints one line per run, then the mappings of the
# last run. Method and figures: benches/memory.md.
#
#   benches/memory.sh [BINARY] [RUNS]     (default: target/release/buildkit-exporter, 3 runs)
set -euo pipefail
cd "$(dirname "$0")/.."

binary="${1:-target/release/buildkit-exporter}"
runs="${2:-3}"
port=19817
[ -x "$binary" ] || { echo "memory.sh: no binary at $binary (cargo build --release)" >&2; exit 2; }

kib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
field() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/status"; }

for run in $(seq "$runs"); do
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi
  "$binary" --source 'buildkitd+unix:///nonexistent.sock' --web.listen-address "127.0.0.1:$port" \
    --log.level error &
  pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  sleep 3
  curl -fsS "http://127.0.0.1:$port/metrics" > /dev/null
  curl -fsS "http://127.0.0.1:$port/" > /dev/null
  sleep 1
  echo "run $run: VmRSS $(kib "$(field VmRSS $pid)"), RssAnon $(kib "$(field RssAnon $pid)"), RssFile $(kib "$(field RssFile $pid)"), threads $(field Threads $pid)"
  if [ "$run" = "$runs" ]; then
    # Resident KiB per mapping, summed by what is mapped (the binary's own name, a library, or
    # the kind of anonymous memory).
    awk '
      /^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "" ? "[anonymous]" : $6); perms = $2; next }
      /^Rss:/ { rss[name " " perms] += $2 }
      END { for (m in rss) if (rss[m] > 0) printf "  %6d KiB  %s\n", rss[m], m }
    ' "/proc/$pid/smaps" | sort -rn
  fi
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  trap - EXIT
done
