#!/bin/sh
# `make run`: prepare ./var (database, server keys and an admin API key via
# `recordctl init` on first use), print calls that work against this server,
# and run recordd in the foreground on the embedded SQLite default (or on
# RECORDD_DB: tools/run-pg.sh sets it for `make run BACKEND=postgres`).
set -eu
bin=${1:-build/recordd}
ctl=$(dirname "$bin")/recordctl
listen=${RECORDD_GRPC_LISTEN:-127.0.0.1:50051}
# the server's keys and the admin key: ./var, or RECORDD_RUN_DIR (run-pg.sh:
# its database has its own admin key)
dir=${RECORDD_RUN_DIR:-var}
mkdir -p "$dir"
if [ ! -f "$dir/admin.key" ]; then
  echo "First run: creating the database, the server's keys and an admin API key (recordctl init)."
  "$ctl" init --dir "./$dir"
fi
export RECORDD_PEPPER_FILE="./$dir/pepper" RECORDD_SIGNING_KEY="./$dir/signing.key" \
       RECORDD_TRUSTED_KEYS="./$dir/trusted-keys"
auth="authorization: Bearer \$(cat $dir/admin.key)"
cat <<MSG
recordd is starting on $listen (database ${RECORDD_DB:-./var/recordd.db}). Ctrl-C stops it.
Every call except health and reflection needs a credential: the admin API key
of organisation "default" is in ./$dir/admin.key (mode 0600).

Try it with grpcurl (reflection is on, no .proto files needed):
  grpcurl -plaintext $listen list
  grpcurl -plaintext -H "$auth" -d '{"schema":{"models":[{"name":"students","fields":[
      {"name":"firstName","type":"STRING","required":true,"maxLength":100},
      {"name":"email","type":"STRING","unique":true},
      {"name":"age","type":"INTEGER","min":0,"max":150},
      {"name":"isActive","type":"BOOLEAN","defaultValue":true}]}]}}' \\
    $listen recordd.v1.Schemas/PushSchema
  grpcurl -plaintext -H "$auth" -d '{"model":"students","id":"s1","data":{"firstName":"Ada","age":36},"returnRecord":true}' \\
    $listen recordd.v1.Records/CreateRecord
  grpcurl -plaintext -H "$auth" -d '{"model":"students","id":"s1","data":{"age":37}}' \\
    $listen recordd.v1.Records/UpdateRecord
  grpcurl -plaintext -H "$auth" -d '{"model":"students","id":"s1"}' $listen recordd.v1.Records/GetRecord

A token that may only change the age of students in group "default" (15 min):
  grpcurl -plaintext -H "$auth" -d '{"caps":[{"can":["update"],"model":"students","group":"default","fields":["age"]}]}' \\
    $listen recordd.v1.Tokens/MintToken

Or with the buf CLI (npm install @bufbuild/buf):
  npx buf curl --protocol grpc --http2-prior-knowledge --list-methods http://$listen
  npx buf curl --protocol grpc --http2-prior-knowledge -H "$auth" \\
    -d '{"model":"students","id":"s1"}' http://$listen/recordd.v1.Records/GetRecord

Or over HTTP/JSON on ${RECORDD_HTTP_LISTEN:-127.0.0.1:8080} (README "HTTP/JSON"):
  curl -s -H "Authorization: Bearer \$(cat $dir/admin.key)" http://${RECORDD_HTTP_LISTEN:-127.0.0.1:8080}/v1/models/students/s1

More keys: $ctl key create --org default --role editor --caps '[{"can":["read","update"],"model":"students","group":"*"}]'
MSG
# tools/run-pg.sh runs us without exec: its trap stops the cluster after
[ -n "${RECORDD_RUN_NOEXEC:-}" ] && { "$bin" --grpc-listen "$listen"; exit $?; }
exec "$bin" --grpc-listen "$listen"
