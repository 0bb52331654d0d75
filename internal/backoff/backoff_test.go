package backoff

import (
	"testing"
	"time"
)

func TestBaseDoublesUpToMax(t *testing.T) {
	p := Policy{Min: time.Second, Max: 5 * time.Second}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for n, w := range want {
		if got := p.Base(n + 1); got != w {
			t.Errorf("Base(%d) = %v, want %v", n+1, got, w)
		}
	}
	if got := p.Base(1000); got != 5*time.Second {
		t.Errorf("Base(1000) = %v, want the cap", got)
	}
}

func TestDelayStaysInItsBand(t *testing.T) {
	p := Policy{Min: time.Second, Max: 8 * time.Second, Jitter: 0.2}
	lo, hi := 8*time.Second, time.Duration(0)
	for range 1000 {
		d := p.Delay(4)
		lo, hi = min(lo, d), max(hi, d)
	}
	if lo < 6400*time.Millisecond || hi > 8*time.Second {
		t.Fatalf("Delay(4) ranged over [%v, %v], want within [6.4s, 8s]", lo, hi)
	}
	if hi-lo < 500*time.Millisecond {
		t.Fatalf("Delay(4) ranged over [%v, %v]: not jittered", lo, hi)
	}
}

func TestJitterOutOfRangeIsClamped(t *testing.T) {
	if got := Jitter(time.Second, -1); got != time.Second {
		t.Fatalf("Jitter(1s, -1) = %v, want 1s", got)
	}
	for range 100 {
		if got := Jitter(time.Second, 5); got < 0 || got > time.Second {
			t.Fatalf("Jitter(1s, 5) = %v, want within [0, 1s]", got)
		}
	}
}
