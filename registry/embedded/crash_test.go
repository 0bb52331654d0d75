package embedded

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prisma-systems/xspace-mesh/registry"
)

// Environment of TestHelperProcess: when helperDirEnv is set, it acts as a
// meshd writing to the store in that directory until it is killed, with
// helperWriters concurrent writers whose instance ids start with
// helperRoundEnv's value.
const (
	helperDirEnv   = "XSPACE_EMBEDDED_HELPER_DIR"
	helperRoundEnv = "XSPACE_EMBEDDED_HELPER_ROUND"
	helperWriters  = 16
)

// TestHelperProcess is not a test: TestKill9 runs the test binary again
// with only this test selected. Its writers register instances as fast as
// they can, every third one also set OUT_OF_SERVICE, and print a line after
// each acknowledged write.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		t.Skip("helper process of TestKill9")
	}
	round := os.Getenv(helperRoundEnv)
	s, err := Open(dir, Options{SweepInterval: time.Hour})
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(2)
	}
	ctx := context.Background()
	if _, err := s.PutVIP(ctx, registry.VIP{Name: "crash", Policy: registry.Policy{Protocol: registry.GRPC}}); err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(2)
	}
	var out sync.Mutex
	ack := func(format string, args ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	ack("ack vip crash")
	for w := range helperWriters {
		go func() {
			for n := 0; ; n++ {
				inst := instance("crash", w<<16|n)
				inst.ID = fmt.Sprintf("crash-%s-%d-%d", round, w, n)
				inst.Metadata = map[string]string{"n": inst.ID}
				if _, err := s.Register(ctx, inst); err != nil {
					ack("error %v", err)
					os.Exit(2)
				}
				ack("ack instance %s", inst.ID)
				if n%3 == 0 {
					if _, err := s.SetStatus(ctx, "crash", inst.ID, registry.StatusOutOfService); err != nil {
						ack("error %v", err)
						os.Exit(2)
					}
					ack("ack status %s", inst.ID)
				}
			}
		}()
	}
	select {} // wait for the kill
}

// TestKill9 kills a process with 16 concurrent writers with SIGKILL, three
// times over the same directory, and checks after each kill that every
// write acknowledged so far, in this round or an earlier one, is there.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	acked := map[string]bool{}
	for round := range 3 {
		for id, outOfService := range killHelperMidStream(t, dir, round, 300) {
			acked[id] = outOfService
		}
		checkAcked(t, dir, acked)
	}
}

// checkAcked opens dir and checks that it holds every acknowledged
// instance, with its acknowledged status, and the VIP.
func checkAcked(t *testing.T, dir string, acked map[string]bool) {
	t.Helper()
	e := &env{t: t, dir: dir, clock: newClock()}
	e.open()
	defer func() { _ = e.s.Close() }()
	ctx := context.Background()
	v, err := e.s.GetVIP(ctx, "crash")
	if err != nil || v.Policy.Protocol != registry.GRPC {
		t.Fatalf("acknowledged VIP after kill -9: %+v, %v", v, err)
	}
	insts, err := e.s.Instances(ctx, "crash")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]registry.Instance{}
	for _, i := range insts {
		got[i.ID] = i
	}
	for id, outOfService := range acked {
		inst, ok := got[id]
		switch {
		case !ok:
			t.Errorf("acknowledged instance %s lost", id)
		case outOfService && inst.Status != registry.StatusOutOfService:
			t.Errorf("instance %s status %s, want the acknowledged OUT_OF_SERVICE", id, inst.Status)
		case inst.Metadata["n"] != id:
			t.Errorf("instance %s metadata %v", id, inst.Metadata)
		}
	}
	t.Logf("%d acknowledged instances survived SIGKILL; %d found", len(acked), len(got))
}

// killHelperMidStream runs TestHelperProcess on dir, sends it SIGKILL once
// it has acknowledged `after` instances, and returns every instance it
// acknowledged (including lines already in the pipe at the kill), with
// whether an OUT_OF_SERVICE status was acknowledged for it. It fails the
// test unless the VIP was acknowledged first.
func killHelperMidStream(t *testing.T, dir string, round, after int) map[string]bool {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperDirEnv+"="+dir, fmt.Sprintf("%s=%d", helperRoundEnv, round))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]bool{}
	vipAcked, killed := false, false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		switch f := strings.Fields(sc.Text()); {
		case len(f) == 3 && f[0] == "ack" && f[1] == "vip":
			vipAcked = true
		case len(f) == 3 && f[0] == "ack" && f[1] == "instance":
			acked[f[2]] = false
		case len(f) == 3 && f[0] == "ack" && f[1] == "status":
			acked[f[2]] = true
		default:
			t.Errorf("helper: %s", sc.Text())
		}
		if !killed && len(acked) >= after {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("helper exited after %d acknowledgements, before the kill: %v\n%s", len(acked), err, stderr.String())
	}
	if !vipAcked {
		t.Fatal("helper did not acknowledge the VIP")
	}
	return acked
}
