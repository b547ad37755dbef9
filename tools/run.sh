#!/bin/sh
# `make run`: prepare ./var, print calls that work against this server, and
# run recordd in the foreground on the embedded SQLite default.
set -eu
bin=${1:-build/recordd}
listen=${RECORDD_GRPC_LISTEN:-127.0.0.1:50051}
mkdir -p var
cat <<MSG
recordd is starting on $listen (database ./var/recordd.db). Ctrl-C stops it.

Try it with grpcurl (reflection is on, no .proto files needed):
  grpcurl -plaintext $listen list
  grpcurl -plaintext -d '{"schema":{"models":[{"name":"students","fields":[
      {"name":"firstName","type":"STRING","required":true,"maxLength":100},
      {"name":"email","type":"STRING","unique":true},
      {"name":"age","type":"INTEGER","min":0,"max":150},
      {"name":"isActive","type":"BOOLEAN","defaultValue":true}]}]}}' \\
    $listen recordd.v1.Schemas/PushSchema
  grpcurl -plaintext -d '{"model":"students","id":"s1","data":{"firstName":"Ada","age":36},"returnRecord":true}' \\
    $listen recordd.v1.Records/CreateRecord
  grpcurl -plaintext -d '{"model":"students","id":"s1","data":{"age":37}}' \\
    $listen recordd.v1.Records/UpdateRecord
  grpcurl -plaintext -d '{"model":"students","id":"s1"}' $listen recordd.v1.Records/GetRecord

Or with the buf CLI (npm install @bufbuild/buf):
  npx buf curl --protocol grpc --http2-prior-knowledge --list-methods http://$listen
  npx buf curl --protocol grpc --http2-prior-knowledge \\
    -d '{"model":"students","id":"s1"}' http://$listen/recordd.v1.Records/GetRecord

MSG
exec "$bin" --grpc-listen "$listen"
