#!/bin/sh
# Prepares the e2e Vault dev server's PKI engine for meshd: a P-256 root CA
# at pki/ and the role "mesh", which issues mesh identities
# (spiffe://xspace/svc/<service> URI SANs only) for 24 hours.
set -eu
if ! vault secrets list -format=json | grep -q '"pki/"'; then
  vault secrets enable -max-lease-ttl=87600h pki
  vault write -field=certificate pki/root/generate/internal \
    common_name="xspace e2e root" key_type=ec key_bits=256 ttl=87600h >/dev/null
fi
vault write pki/roles/mesh \
  allowed_uri_sans='spiffe://xspace/svc/*' require_cn=false \
  server_flag=true client_flag=true key_type=ec key_bits=256 \
  ttl=24h max_ttl=24h no_store=true
echo "vault-pki: pki/ root and role mesh ready"
