#!/bin/sh
# Fetches the CA that signs meshd's certificate, issues each demo service's
# token with meshd's keyring and writes the Envoy bootstraps of the
# sidecars (TLS to meshd, checked tokens), as a platform's deployment would.
# The demo api instances read their token and the CA from $OUT too.
#
# KEYRING, OUT and CA_URL override the container paths (the e2e assets test
# runs this script on the host).
set -eu
keyring=${KEYRING:-/data/tokens.yaml}
out=${OUT:-/bootstrap}
ca_url=${CA_URL:-http://vault:8200/v1/pki/ca/pem}
wget -qO "$out/ca.crt" "$ca_url"
for svc in api worker; do
  meshctl token issue --service "$svc" --ttl 720h --keyring "$keyring" > "$out/$svc.token"
done
meshctl bootstrap --service api --instance api-1 --xds meshd:18000 --xds-ca-file /bootstrap/ca.crt \
  --inbound-port 8443 --app-port 8080 --token-file "$out/api.token" --keyring "$keyring" --out "$out/api-1.yaml"
meshctl bootstrap --service api --instance api-2 --xds meshd:18000 --xds-ca-file /bootstrap/ca.crt \
  --inbound-port 8443 --app-port 8080 --token-file "$out/api.token" --keyring "$keyring" --out "$out/api-2.yaml"
meshctl bootstrap --service worker --instance worker-1 --xds meshd:18000 --xds-ca-file /bootstrap/ca.crt \
  --token-file "$out/worker.token" --keyring "$keyring" --out "$out/worker-1.yaml"
chmod 600 "$out"/*.token
# The Envoy image runs Envoy as the user envoy (uid 101).
if [ "$(id -u)" = 0 ]; then
  chown 101:101 "$out"/*.yaml
fi
echo "setup: CA fetched, tokens issued, bootstraps written to $out"
