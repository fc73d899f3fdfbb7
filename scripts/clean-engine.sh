#!/usr/bin/env bash
# Remove every container, volume and network this project's Compose project left in the
# engine (by label), keeping images and the build cache. For CI and `invoke reset`.
set -euo pipefail
project="${COMPOSE_PROJECT_NAME:-flfed}"
label="com.docker.compose.project=${project}"
ids=$(docker ps -aq --filter "label=$label")
[ -n "$ids" ] && docker rm -f $ids >/dev/null
vols=$(docker volume ls -q --filter "label=$label")
[ -n "$vols" ] && docker volume rm $vols >/dev/null
nets=$(docker network ls -q --filter "label=$label")
[ -n "$nets" ] && docker network rm $nets >/dev/null
echo "[clean] removed earlier containers, volumes and networks of project $project"
