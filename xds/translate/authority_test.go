package translate

import (
	"strings"
	"testing"

	lua "github.com/yuin/gopher-lua"

	"github.com/prisma-systems/xspace-mesh/names"
)

// Envoy runs authority.lua on LuaJIT (Lua 5.1); gopher-lua implements the
// same language and string library, so the script's mapping is checked here
// against names.ClusterForAuthority, the one definition of the mapping.

var authorities = []string{
	"payments", "payments.vip", "payments.svip", "payments:8080", "payments.vip:8080",
	"payments.svip:443", "PAYMENTS.VIP", "Payments:80", "payments:", "payments:http",
	"a", "a-b-1", "-payments", "payments-", "pay_ments", "payments.example.com",
	"payments.svip.vip", "payments.vip.svip", ".vip", ".svip", "vip", "svip", "svip.vip",
	"127.0.0.1", "127.0.0.1:8080", "[::1]:8080", "::1", "", ":8080",
	strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 63) + ".svip",
	"payments:8080:90", "pay ments", "payments\t",
}

func newLua(t *testing.T) *lua.LState {
	t.Helper()
	L := lua.NewState()
	t.Cleanup(L.Close)
	if err := L.DoString(authorityLua); err != nil {
		t.Fatalf("authority.lua does not load: %v", err)
	}
	return L
}

func TestAuthorityLuaMatchesClusterForAuthority(t *testing.T) {
	L := newLua(t)
	for _, a := range authorities {
		if err := L.CallByParam(lua.P{Fn: L.GetGlobal("cluster_for"), NRet: 2, Protect: true}, lua.LString(a)); err != nil {
			t.Fatalf("cluster_for(%q): %v", a, err)
		}
		vip, cluster := L.Get(-2), L.Get(-1)
		L.Pop(2)
		want, ok := names.ClusterForAuthority(a)
		switch {
		case !ok && cluster != lua.LNil:
			t.Errorf("%q: Lua maps to %v; Go says it is not a VIP", a, cluster)
		case ok && cluster.String() != want:
			t.Errorf("%q: Lua maps to %v; Go maps to %q", a, cluster, want)
		case ok:
			if wantVIP, _, _ := names.ParseCluster(want); vip.String() != wantVIP {
				t.Errorf("%q: Lua's VIP is %v; want %q", a, vip, wantVIP)
			}
		}
	}
}

// TestAuthorityLuaRequest drives envoy_on_request with a stand-in for
// Envoy's stream handle (the calls the script makes: headers():get and
// :replace, respond): a VIP authority sets both headers, overwriting the
// application's; anything else is answered 400 and routed nowhere.
func TestAuthorityLuaRequest(t *testing.T) {
	L := newLua(t)
	run := func(authority string) (headers map[string]string, status, body string) {
		headers = map[string]string{":authority": authority, names.ClusterHeader: "spoofed.vip"}
		hdrs := L.NewTable()
		L.SetField(hdrs, "get", L.NewFunction(func(L *lua.LState) int {
			v, ok := headers[L.CheckString(2)]
			if !ok {
				L.Push(lua.LNil)
			} else {
				L.Push(lua.LString(v))
			}
			return 1
		}))
		L.SetField(hdrs, "replace", L.NewFunction(func(L *lua.LState) int {
			headers[L.CheckString(2)] = L.CheckString(3)
			return 0
		}))
		handle := L.NewTable()
		L.SetField(handle, "headers", L.NewFunction(func(L *lua.LState) int { L.Push(hdrs); return 1 }))
		L.SetField(handle, "respond", L.NewFunction(func(L *lua.LState) int {
			status = L.CheckTable(2).RawGetString(":status").String()
			body = L.CheckString(3)
			return 0
		}))
		if err := L.CallByParam(lua.P{Fn: L.GetGlobal("envoy_on_request"), Protect: true}, handle); err != nil {
			t.Fatalf("envoy_on_request(%q): %v", authority, err)
		}
		return headers, status, body
	}

	h, status, _ := run("Payments.SVIP:8443")
	if status != "" || h[names.ClusterHeader] != "payments.svip" || h[names.VIPHeader] != "payments" {
		t.Fatalf("payments.svip: status %q, headers %v; want cluster and VIP headers set", status, h)
	}
	h, status, body := run("payments.example.com")
	if status != "400" || !strings.Contains(body, `"payments.example.com" is not a VIP name`) || h[names.ClusterHeader] != "spoofed.vip" {
		t.Fatalf("a non-VIP authority: status %q body %q headers %v; want a 400 naming it, headers untouched", status, body, h)
	}
}
