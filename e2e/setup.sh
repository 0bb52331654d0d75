#!/bin/sh
# Issues each demo service's token with meshd's keyring and writes the
# Envoy bootstraps of the sidecars, as a platform's deployment would.
#
# KEYRING, OUT and TOKENS override the container paths (the e2e assets test
# runs this script on the host).
set -eu
keyring=${KEYRING:-/data/tokens.yaml}
out=${OUT:-/bootstrap}
tokens=${TOKENS:-/tmp}
for svc in api worker; do
  meshctl token issue --service "$svc" --ttl 720h --keyring "$keyring" > "$tokens/$svc.token"
done
meshctl bootstrap --service api --instance api-1 --xds meshd:18000 \
  --inbound-port 8443 --app-port 8080 --token-file "$tokens/api.token" --out "$out/api-1.yaml"
meshctl bootstrap --service api --instance api-2 --xds meshd:18000 \
  --inbound-port 8443 --app-port 8080 --token-file "$tokens/api.token" --out "$out/api-2.yaml"
meshctl bootstrap --service worker --instance worker-1 --xds meshd:18000 \
  --token-file "$tokens/worker.token" --out "$out/worker-1.yaml"
# The Envoy image runs Envoy as the user envoy (uid 101).
if [ "$(id -u)" = 0 ]; then
  chown 101:101 "$out"/*.yaml
fi
echo "setup: tokens issued, bootstraps written to $out"
