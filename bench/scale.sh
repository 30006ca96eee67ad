#!/bin/bash
# Multi-thread scaling of tcpkit serve (echo) on a many-core machine.
cd "$(dirname "$0")/.."
B=${TCPKIT:-build/release/tcpkit}
nproc; uname -r; grep -m1 "model name" /proc/cpuinfo
ulimit -n 65536 2>/dev/null || true
for t in 1 2 4 8; do
  taskset -c 0-7 $B serve --mode echo --quiet --port 0 --threads $t > /tmp/tcpkit-scale.log 2>&1 &
  pid=$!; sleep 0.5
  port=$(grep -o '127.0.0.1:[0-9]*' /tmp/tcpkit-scale.log | head -1 | cut -d: -f2)
  for size in 4096 16; do
    echo "server_threads=$t size=$size"
    taskset -c 8-15 $B bench 127.0.0.1 $port --conns 400 --size $size --duration 4 --threads 8 --format json
  done
  kill $pid; wait $pid 2>/dev/null
done
