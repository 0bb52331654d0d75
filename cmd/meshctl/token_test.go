package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prisma-systems/xspace-mesh/token"
)

func TestTokenIssue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	kr, _, err := token.LoadOrCreate(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := run(t.Context(), []string{"token", "issue", "--service", "payments", "--ttl", "2h", "--keyring", path}, nil, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	claims, err := kr.Verify(strings.TrimSpace(out.String()))
	if err != nil || claims.Service != "payments" || time.Until(claims.Expires) > 2*time.Hour {
		t.Fatalf("issued token: %+v, %v", claims, err)
	}

	out.Reset()
	if code := run(t.Context(), []string{"-o", "json", "token", "issue", "--service", "orders", "--keyring", path}, nil, &out, &errOut); code != 0 {
		t.Fatalf("json: exit %d: %s", code, errOut.String())
	}
	var doc tokenOutput
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil || doc.Service != "orders" || doc.Token == "" {
		t.Fatalf("json output: %v %s", err, out.String())
	}

	for _, args := range [][]string{
		{"token", "issue", "--keyring", path},                                       // no service
		{"token", "issue", "--service", "Bad_Name", "--keyring", path},              // invalid service
		{"token", "issue", "--service", "payments", "--keyring", path + ".missing"}, // no keyring
	} {
		errOut.Reset()
		if code := run(t.Context(), args, nil, &out, &errOut); code == 0 {
			t.Errorf("%v succeeded", args)
		} else if errOut.Len() == 0 {
			t.Errorf("%v failed without saying why", args)
		}
	}
}
