#!/usr/bin/env bash
# Start-to-ready of `testenv up` (the binary the launcher runs), N times, and the idle RSS.
bin="$(cd "$(dirname "$0")/../.." && pwd)/target/testenv/testenv"
for i in 1 2 3 4 5; do
  d=$(mktemp -d)
  s=$(date +%s.%N)
  $bin up --dir $d > $d/out 2>$d/err &
  p=$!
  while [ ! -s $d/out ]; do sleep 0.02; done
  e=$(date +%s.%N)
  echo "run $i: ready after $(echo "$e - $s" | bc) s"
  if [ $i = 5 ]; then
    sleep 30
    kid=$(pgrep -P $p)
    echo "idle 30s after ready: apiserver+etcd RSS $(awk '/VmRSS/{print $2}' /proc/$p/status) KiB, controller-manager RSS $(awk '/VmRSS/{print $2}' /proc/$kid/status) KiB"
  fi
  kill -TERM $p; wait $p
  rm -rf $d
done
