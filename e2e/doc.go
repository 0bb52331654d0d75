// Package e2e is the end-to-end suite of xspace-mesh with real Envoy
// sidecars in front of two demo services (demo/api and demo/worker).
//
// The tests are behind the e2e build tag (`make e2e`). They run in one of
// two modes:
//   - with ENVOY_BIN set to an Envoy binary (>= bootstrap.MinEnvoyVersion,
//     1.36.0; the compose suite pins the release in .env): meshd, the demo
//     services and one Envoy per instance run as processes on loopback,
//     with meshd's embedded registry and CA;
//   - otherwise, with a working docker: docker-compose.yaml, with meshd on
//     Consul and Vault and Envoy's official image.
//
// Where neither exists they skip, saying so in one line. The untagged
// tests here check the compose file, meshd's config and the scripts, so
// `make test` keeps them from rotting on machines without Docker.
package e2e
