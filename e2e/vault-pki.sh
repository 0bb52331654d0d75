#!/bin/sh
# Prepares the e2e Vault dev server's PKI engine for meshd: a P-256 root CA
# at pki/, the role "mesh", which issues mesh identities
# (spiffe://xspace/svc/<service> URI SANs only) for 24 hours, and the role
# "meshd", which issues meshd's serving certificate: the names meshd is
# reached by and the control plane's URI SAN.
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
vault write pki/roles/meshd \
  allowed_domains=meshd,localhost allow_bare_domains=true allow_subdomains=false \
  allow_ip_sans=true allowed_uri_sans='spiffe://xspace/svc/xspace-meshd' require_cn=false \
  server_flag=true client_flag=false key_type=ec key_bits=256 \
  ttl=24h max_ttl=24h no_store=true
echo "vault-pki: pki/ root, roles mesh and meshd ready"
