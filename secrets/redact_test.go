package secrets_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/prisma-systems/xspace-mesh/internal/await"
	"github.com/prisma-systems/xspace-mesh/internal/testlog"
	"github.com/prisma-systems/xspace-mesh/secrets"
	"github.com/prisma-systems/xspace-mesh/secrets/embedded"
)

// keyFragments are substrings of a PEM private key that must not show
// anywhere: its header, and every line of its base64 body.
func keyFragments(t *testing.T, keyPEM []byte) []string {
	t.Helper()
	block, _ := pem.Decode(keyPEM)
	if block == nil || !strings.Contains(block.Type, "PRIVATE KEY") {
		t.Fatalf("not a PEM private key: %q", block)
	}
	body := keyPEM[40:72] // inside the base64 body
	frags := []string{
		"PRIVATE KEY",
		fmt.Sprintf("%x", block.Bytes[len(block.Bytes)-16:]), // the DER, in hex
		fmt.Sprintf("%x", body),                              // the PEM bytes, as %x prints them
		strings.Trim(fmt.Sprintf("%d", body), "[]"),          // and as %d prints them
	}
	for line := range strings.SplitSeq(string(keyPEM), "\n") {
		if line != "" && !strings.HasPrefix(line, "-----") {
			frags = append(frags, line)
		}
	}
	return frags
}

func TestNoPrivateKeyInLogsOrPrintedForms(t *testing.T) {
	var logs testlog.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	iss := &flaky{Issuer: newCA(t, embedded.Options{Lifetime: 2 * time.Second, Logger: log})}
	m := secrets.NewManager(iss, secrets.ManagerOptions{Logger: log, Registerer: reg, MinBackoff: 50 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Run(ctx)

	c, err := m.Acquire(ctx, "payments")
	if err != nil {
		t.Fatal(err)
	}
	var keys [][]byte
	keys = append(keys, c.KeyPEM)
	changed := make(chan struct{}, 10)
	m.OnChange(func(string) { changed <- struct{}{} })
	<-changed // a renewal, logged
	cur, ok := m.Current("payments")
	if !ok || cur.Serial == c.Serial {
		t.Fatalf("after a rotation Current = %v, %v", cur, ok)
	}
	keys = append(keys, cur.KeyPEM)
	iss.setFail(true) // failures and an expiry, logged with errors
	// The expiry is logged as the certificate is dropped: wait for both.
	await.True(t, "the certificate to expire while the issuer fails", func() bool {
		_, ok := m.Current("payments")
		return !ok && strings.Contains(logs.String(), "expired without a replacement")
	})
	iss.setFail(false)

	log.Info("a certificate in a log line", "certificate", c, "pointer", &c, "list", []secrets.Certificate{c})
	all := logs.String() + "\n" + printedForms(t, c, m, reg)
	for _, key := range keys {
		for _, frag := range keyFragments(t, key) {
			if strings.Contains(all, frag) {
				t.Fatalf("private key material %q appears in logs, printed forms or metrics", frag)
			}
		}
	}
	for _, want := range []string{secrets.Redacted, `"serial"`, "certificate renewed", "renewal failed", "expired without a replacement"} {
		if !strings.Contains(all, want) {
			t.Errorf("output lacks %q: the test does not see what it checks", want)
		}
	}
	var view map[string]any
	if err := json.Unmarshal([]byte(mustJSON(t, c)), &view); err != nil || view["private_key"] != secrets.Redacted {
		t.Fatalf("JSON form %v: want private_key %q", view, secrets.Redacted)
	}
}

// printedForms renders c, the manager's debug views and the metrics every
// way a person or a program might print them.
func printedForms(t *testing.T, c secrets.Certificate, m *secrets.Manager, reg *prometheus.Registry) string {
	t.Helper()
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		out = append(out, fmt.Sprintf(verb, c), fmt.Sprintf(verb, &c), fmt.Sprintf(verb, []secrets.Certificate{c}))
	}
	out = append(out, c.String())
	for _, v := range []any{c, &c, map[string]any{"cert": c}, m.Certificates(), m.Health()} {
		out = append(out, mustJSON(t, v))
	}
	var metrics bytes.Buffer
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&metrics, mf); err != nil {
			t.Fatal(err)
		}
	}
	return strings.Join(append(out, metrics.String()), "\n")
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
