#!/bin/sh
# recordd-entrypoint: the container's first process (README "Deploy").
#
# Key files, each from its RECORDD_* variable, default under RECORDD_KEYS_DIR
# (/data/keys, on the volume):
#   RECORDD_PEPPER_FILE   API-key hash secret
#   RECORDD_SIGNING_KEY   k4.secret the server signs tokens with
#   RECORDD_TRUSTED_KEYS  k4.public file or directory of extra trusted keys
# On a start where RECORDD_KEYS_DIR holds no admin.key, `recordctl init`
# creates whatever of these is missing (files that exist, e.g. mounted from a
# Kubernetes Secret, are kept), the database and an admin API key for the
# organisation RECORDD_INIT_ORG (default "default"), saved as
# RECORDD_KEYS_DIR/admin.key (mode 0600). The key is never printed to the log.
# RECORDD_INIT=never skips this step.
#
# `recordd-entrypoint recordctl ARGS` runs recordctl with the same settings
# (for example `recordctl backup --out /data/backup.db`); anything else is
# passed to recordd as flags. recordd replaces this shell (exec), so it is
# PID 1 and receives the SIGTERM of `docker stop` / `podman stop` / Kubernetes.
set -eu

: "${RECORDD_DB:=/data/recordd.db}"
: "${RECORDD_KEYS_DIR:=/data/keys}"
: "${RECORDD_PEPPER_FILE:=$RECORDD_KEYS_DIR/pepper}"
: "${RECORDD_SIGNING_KEY:=$RECORDD_KEYS_DIR/signing.key}"
: "${RECORDD_TRUSTED_KEYS:=$RECORDD_KEYS_DIR/trusted-keys}"
export RECORDD_DB RECORDD_PEPPER_FILE RECORDD_SIGNING_KEY RECORDD_TRUSTED_KEYS

if [ "${1:-}" = "recordctl" ]; then
    shift
    exec /usr/local/bin/recordctl "$@"
fi

# --help and --version only print: no keys, no database
for arg in "$@"; do
    case "$arg" in
    --help | -h | --version | -V) exec /usr/local/bin/recordd "$@" ;;
    esac
done

# The log stays JSON lines: init's notes are shown only when it fails.
if [ "${RECORDD_INIT:-auto}" != "never" ] && [ ! -e "$RECORDD_KEYS_DIR/admin.key" ]; then
    if ! notes=$(/usr/local/bin/recordctl init --dir "$RECORDD_KEYS_DIR" \
        --org "${RECORDD_INIT_ORG:-default}" --db "$RECORDD_DB" --pepper-file "$RECORDD_PEPPER_FILE" \
        --signing-key "$RECORDD_SIGNING_KEY" --trusted-keys "$RECORDD_TRUSTED_KEYS" 2>&1 >/dev/null); then
        printf '%s\n' "$notes" >&2
        exit 1
    fi
    printf '{"time":"%s","level":"info","msg":"initialised: missing keys, the database and an admin API key (RECORDD_KEYS_DIR/admin.key) created"}\n' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >&2
fi

exec /usr/local/bin/recordd "$@"
