package translate

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/prisma-systems/xspace-mesh/internal/envoyproto"
	"github.com/prisma-systems/xspace-mesh/names"
	"github.com/prisma-systems/xspace-mesh/registry"
)

// SecureCluster returns the mutual-TLS cluster "<vip>.svip" for a VIP: the
// same policy as Cluster, plus an upstream TLS context in which
//   - the sidecar's client certificate is the SDS secret xspace/identity,
//     which the control plane resolves to the sidecar's own service;
//   - the server is validated against the SDS secret xspace/trust-bundle
//     and must present the URI SAN spiffe://xspace/svc/<vip>, so a
//     certificate of any other service is refused;
//   - SNI is the cluster name, and ALPN offers the VIP's protocol.
//
// Both secrets come over the same ADS stream as the cluster
// (https://www.envoyproxy.io/docs/envoy/latest/configuration/security/secret).
func SecureCluster(v registry.VIP) *clusterv3.Cluster {
	return secureCluster(v.Name, v.Policy.Normalize())
}

// secureCluster is SecureCluster of a normalized policy.
func secureCluster(vip string, p registry.Policy) *clusterv3.Cluster {
	return cluster(vip, p, true)
}

// upstreamTransportSocket is the TLS transport socket of a VIP's secure
// cluster.
func upstreamTransportSocket(vip string, proto registry.Protocol) *corev3.TransportSocket {
	return &corev3.TransportSocket{
		Name:       "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: envoyproto.Any(upstreamTLS(vip, proto))},
	}
}

func upstreamTLS(vip string, proto registry.Protocol) *tlsv3.UpstreamTlsContext {
	alpn := []string{"http/1.1"}
	if proto == registry.HTTP2 || proto == registry.GRPC {
		alpn = []string{"h2"}
	}
	return &tlsv3.UpstreamTlsContext{
		Sni: names.Cluster(vip, true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols:                  alpn,
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(names.IdentitySecret)},
			ValidationContextType: peerValidation(&matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Exact{Exact: names.SPIFFE(vip)},
			}),
		},
	}
}

// peerValidation accepts a peer certificate that chains to the SDS trust
// bundle and has a URI SAN that uri matches.
func peerValidation(uri *matcherv3.StringMatcher) *tlsv3.CommonTlsContext_CombinedValidationContext {
	return &tlsv3.CommonTlsContext_CombinedValidationContext{
		CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext: &tlsv3.CertificateValidationContext{
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: uri}},
			},
			ValidationContextSdsSecretConfig: sdsSecret(names.TrustBundleSecret),
		},
	}
}

// sdsSecret refers to a secret served over the ADS stream, waited for at
// most FetchTimeout: a cluster or listener that needs it stays warming
// until then (Envoy's sds_api.cc, init target), and a warming cluster holds
// back the sidecar's other cluster requests.
func sdsSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: fetchSource()}
}

// IdentitySecret returns the SDS secret xspace/identity holding a service's
// certificate chain and private key, both PEM.
func IdentitySecret(chainPEM, keyPEM []byte) *tlsv3.Secret {
	return &tlsv3.Secret{Name: names.IdentitySecret, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inlineBytes(chainPEM),
		PrivateKey:       inlineBytes(keyPEM),
	}}}
}

// TrustBundleSecret returns the SDS secret xspace/trust-bundle: the CA
// certificates a peer's certificate must chain to.
func TrustBundleSecret(bundlePEM []byte) *tlsv3.Secret {
	return &tlsv3.Secret{Name: names.TrustBundleSecret, Type: &tlsv3.Secret_ValidationContext{
		ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: inlineBytes(bundlePEM)},
	}}
}

func inlineBytes(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}
