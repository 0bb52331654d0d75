package api_test

import (
	"bytes"
	"net/http"
	"sync"
	"testing"
)

// TestConcurrentCreatesAnswerCreatedOnce: 50 concurrent PUTs of one new VIP
// answer 201 Created exactly once and 200 otherwise. PUT creates or
// replaces, so the others are not conflicts; only the one whose write
// created the VIP says it did.
func TestConcurrentCreatesAnswerCreatedOnce(t *testing.T) {
	s := newTestServer(t)
	const n = 50
	statuses := make([]int, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			req, err := http.NewRequest(http.MethodPut, s.url+"/v1/vips/fresh", bytes.NewReader([]byte(`{"policy":{"protocol":"grpc"}}`)))
			if err != nil {
				errs[i] = err
				return
			}
			req.Header.Set("Content-Type", jsonCT)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			statuses[i] = resp.StatusCode
			errs[i] = resp.Body.Close()
		})
	}
	close(start)
	wg.Wait()
	count := map[int]int{}
	for i, st := range statuses {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		count[st]++
	}
	if count[http.StatusCreated] != 1 || count[http.StatusOK] != n-1 {
		t.Errorf("statuses %v, want one 201 and %d 200", count, n-1)
	}
	if vips, err := s.client.ListVIPs(t.Context()); err != nil || len(vips) != 1 {
		t.Errorf("VIPs stored: %v, %v; want fresh once", vips, err)
	}
}
