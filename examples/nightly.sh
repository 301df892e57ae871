#!/bin/sh
# Nightly load (see cron.txt). No flock: the ledger refuses a second process on the same
# state (exit 2), so a run still going when the next one starts is left alone.
# Exit codes: 0 all sent, 1 finished with rejects, 2 config/input error or already running,
# 3 the API refused the key or cannot be reached, 130/143 stopped (the next night resumes).
set -u
umask 077
export FLYWHEEL_API_KEY="$(cat /etc/flywheel-import/api-key)"
exec flywheel-import run /etc/flywheel-import/nightly.yaml --no-progress --log-format json >>/var/log/flywheel-import/nightly.log 2>&1
