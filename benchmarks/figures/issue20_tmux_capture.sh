#!/bin/bash
# The ResNet-20 search on a terminal (tmux): the live bar, captured every 0.5 s (only frames that changed).
S=amceta
tmux kill-session -t $S 2>/dev/null
tmux new-session -d -s $S -x 150 -y 12 "bash -c 'source ~/.cache/amc-ci/venv-*/bin/activate; export PYTHONPATH="$(git rev-parse --show-toplevel)"/src; cd /tmp; rm -rf /tmp/eta-r20-tmux; nice -n 5 python -m amc.cli search --model resnet20 --weights /work/shared/data/pretrained/cifar10jpeg/resnet20.pt --data cifar10 --data-dir /work/shared/data/cifar10-jpeg/cifar10_jpeg.npz --ratio 0.5 --episodes 60 --threads 1 --out /tmp/eta-r20-tmux; echo EXITED; sleep 600'"
start=$(date +%s.%N); last=""
while true; do
  frame=$(tmux capture-pane -p -t $S | sed '/^$/d')
  if [ "$frame" != "$last" ]; then
    printf '=== t=%.1fs\n%s\n' "$(echo "$(date +%s.%N) - $start" | bc)" "$frame"; last=$frame
  fi
  echo "$frame" | grep -q EXITED && break
  sleep 0.5
done
tmux kill-session -t $S
