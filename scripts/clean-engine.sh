#!/usr/bin/env bash
# Remove every container, volume and network this project's Compose project left in the
# engine (by label), keeping images and the build cache. .ci/run calls it before
# `./invoke test`, so a fresh clone (new CA, new secrets) does not meet an earlier run's
# containers and volumes. By hand: `bash scripts/clean-engine.sh` wipes the running stack
# and all its data (no confirmation), then `./invoke up` starts from scratch. The project
# is $COMPOSE_PROJECT_NAME from the environment, else flfed (.env is not read).
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
