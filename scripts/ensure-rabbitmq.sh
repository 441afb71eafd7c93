#!/usr/bin/env bash
# Make sure a RabbitMQ broker answers on ADSHUB_AMQP_URL's host (default 127.0.0.1:5672).
set -euo pipefail
url=${ADSHUB_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
hostport=${url#*://}
hostport=${hostport#*@}
hostport=${hostport%%/*}
host=${hostport%:*}
port=${hostport##*:}
[ "$port" = "$hostport" ] && port=5672
up() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }
up && exit 0
if [ "$host" != "127.0.0.1" ] && [ "$host" != "localhost" ]; then
  echo "RabbitMQ at $host:$port does not answer (ADSHUB_AMQP_URL)" >&2
  exit 1
fi
if command -v rabbitmq-server >/dev/null 2>&1; then
  echo "starting the local RabbitMQ (rabbitmq-server -detached)"
  if [ "$(id -u)" -eq 0 ] || ! command -v sudo >/dev/null 2>&1; then
    rabbitmq-server -detached
  else
    sudo rabbitmq-server -detached
  fi
  for _ in $(seq 1 90); do
    up && exit 0
    sleep 1
  done
  echo "RabbitMQ did not come up on $host:$port within 90 s" >&2
  exit 1
fi
cat >&2 <<MSG
RabbitMQ is not running on $host:$port and is not installed. Get one of:
  sudo apt-get install -y rabbitmq-server && sudo rabbitmq-server -detached
  docker compose up -d rabbitmq          (from this repository)
or point ADSHUB_AMQP_URL at your broker.
MSG
exit 1
