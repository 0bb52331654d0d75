package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
)

// Bounds of Run's sleeps: retries after a failure back off from
// minUpkeepRetry to maxUpkeepRetry, and a token that never expires is
// looked at again after idleUpkeep.
const (
	minUpkeepRetry = time.Second
	maxUpkeepRetry = 30 * time.Second
	idleUpkeep     = time.Hour
)

// tokenState is what the issuer knows of its current token.
type tokenState struct {
	// mu serialises logins, lookups and renewals, and guards the fields.
	mu sync.Mutex
	// known: ttl and renewable come from a login, lookup or renewal.
	known     bool
	obtained  time.Time     // when ttl was granted
	ttl       time.Duration // 0: the token does not expire
	renewable bool
	// period is what a renewal asks for: the token's creation TTL.
	period time.Duration
	// capped: a renewal granted less than asked (the token's max TTL is
	// near), so renewing again is pointless.
	capped bool
	// failures counts consecutive failed upkeeps, for Run's backoff.
	failures int
}

func (t *tokenState) expiry() time.Time { return t.obtained.Add(t.ttl) }

// set records a TTL granted at now.
func (t *tokenState) set(now time.Time, ttl time.Duration, renewable bool) {
	t.known, t.obtained, t.ttl, t.renewable, t.failures = true, now, ttl, renewable, 0
}

// do runs fn with the issuer's client. With AppRole it logs in first when
// there is no token or the token is past two thirds of its TTL, and logs in
// again and retries once when Vault answers 403 (the token may have been
// revoked or have expired early).
func (i *Issuer) do(ctx context.Context, fn func(*api.Client) (*api.Secret, error)) (*api.Secret, error) {
	if i.opts.AppRole == nil {
		s, err := fn(i.client)
		return s, shorten(err)
	}
	if err := i.loginIfStale(ctx, ""); err != nil {
		return nil, err
	}
	used := i.client.Token()
	s, err := fn(i.client)
	err = shorten(err)
	if !errors.Is(err, ErrPermissionDenied) {
		return s, err
	}
	if lerr := i.loginIfStale(ctx, used); lerr != nil {
		return nil, errors.Join(err, lerr)
	}
	s, err = fn(i.client)
	return s, shorten(err)
}

// loginIfStale logs in with AppRole unless the current token is fresh. A
// non-empty refused names a token Vault refused: it is stale unless another
// caller has replaced it meanwhile.
func (i *Issuer) loginIfStale(ctx context.Context, refused string) error {
	i.token.mu.Lock()
	defer i.token.mu.Unlock()
	t := &i.token
	switch {
	case refused != "" && i.client.Token() != refused:
		return nil
	case refused == "" && t.known && (t.ttl == 0 || i.now().Before(t.obtained.Add(t.ttl*2/3))):
		return nil
	}
	return i.loginLocked(ctx)
}

// loginLocked logs in with AppRole and installs the new token. Called with
// token.mu held.
func (i *Issuer) loginLocked(ctx context.Context) error {
	a := i.opts.AppRole
	path := "auth/" + a.Mount + "/login"
	data := map[string]any{"role_id": a.RoleID}
	if a.SecretID != "" {
		data["secret_id"] = a.SecretID
	}
	s, err := i.login.Logical().WriteWithContext(ctx, path, data)
	err = shorten(err)
	if err == nil && (s == nil || s.Auth == nil || s.Auth.ClientToken == "") {
		err = errors.New("the response holds no token")
	}
	i.metrics.logins.WithLabelValues(result(err)).Inc()
	if err != nil {
		return fmt.Errorf("AppRole login at %s: %w", path, err)
	}
	i.client.SetToken(s.Auth.ClientToken)
	ttl := time.Duration(s.Auth.LeaseDuration) * time.Second
	i.token.set(i.now(), ttl, s.Auth.Renewable)
	i.setExpiryGauge()
	i.log.Info("logged in to Vault with AppRole", "ttl", ttl, "policies", s.Auth.Policies)
	return nil
}

func (i *Issuer) setExpiryGauge() {
	t := &i.token
	if !t.known || t.ttl == 0 {
		i.metrics.tokenExpiry.Set(0)
		return
	}
	i.metrics.tokenExpiry.Set(float64(t.expiry().UnixNano()) / 1e9)
}

// Run keeps the issuer's token alive until ctx ends. With AppRole it logs
// in again at two thirds of the token's TTL. With a token it looks the
// token up, then renews it at half its TTL while it is renewable; a token
// that is not renewable, or has reached its max TTL, is left to expire,
// logged once (replace it, or use AppRole).
func (i *Issuer) Run(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		timer.Reset(i.upkeep(ctx))
	}
}

// upkeep does what the token needs now and returns when to look again.
func (i *Issuer) upkeep(ctx context.Context) time.Duration {
	i.token.mu.Lock()
	defer i.token.mu.Unlock()
	t := &i.token
	var err error
	switch {
	case i.opts.AppRole != nil:
		if !t.known || (t.ttl > 0 && !i.now().Before(t.obtained.Add(t.ttl*2/3))) {
			err = i.loginLocked(ctx)
		}
	case !t.known:
		err = i.lookupLocked(ctx)
	case t.renewable && !t.capped && t.ttl > 0 && !i.now().Before(t.obtained.Add(t.ttl/2)):
		err = i.renewLocked(ctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0
		}
		t.failures++
		wait := min(minUpkeepRetry<<min(t.failures-1, 5), maxUpkeepRetry)
		i.log.Warn("vault token upkeep failed; retrying", "error", err, "retry_in", wait)
		return wait
	}
	return i.nextUpkeep()
}

// nextUpkeep is how long until the token next needs attention.
func (i *Issuer) nextUpkeep() time.Duration {
	t := &i.token
	var at time.Time
	switch {
	case t.ttl == 0:
		return idleUpkeep
	case i.opts.AppRole != nil:
		at = t.obtained.Add(t.ttl * 2 / 3)
	case t.renewable && !t.capped:
		at = t.obtained.Add(t.ttl / 2)
	default:
		return idleUpkeep
	}
	return max(at.Sub(i.now()), minUpkeepRetry)
}

// lookupLocked learns the configured token's TTL and renewability.
func (i *Issuer) lookupLocked(ctx context.Context) error {
	s, err := i.client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		err = shorten(err)
		return fmt.Errorf("look up the token: %w%s", err, hint(err, "auth/token/lookup-self", ""))
	}
	ttl, err := s.TokenTTL()
	if err != nil {
		return fmt.Errorf("token TTL: %w", err)
	}
	renewable, err := s.TokenIsRenewable()
	if err != nil {
		return fmt.Errorf("token renewability: %w", err)
	}
	i.token.set(i.now(), ttl, renewable)
	i.token.period = ttl
	if d, err := parseSeconds(s.Data["creation_ttl"]); err == nil && d > 0 {
		i.token.period = d
	}
	i.setExpiryGauge()
	switch {
	case ttl == 0:
		i.log.Info("the vault token does not expire")
	case !renewable:
		i.log.Warn("the vault token is not renewable; replace it before it expires, or use AppRole",
			"expires_at", i.token.expiry())
	default:
		i.log.Info("renewing the vault token at half its TTL", "ttl", ttl)
	}
	return nil
}

// renewLocked renews the configured token for its usual TTL.
func (i *Issuer) renewLocked(ctx context.Context) error {
	t := &i.token
	s, err := i.client.Auth().Token().RenewSelfWithContext(ctx, int(t.period/time.Second))
	err = shorten(err)
	if err == nil && (s == nil || s.Auth == nil) {
		err = errors.New("the response holds no token information")
	}
	i.metrics.tokenRenewals.WithLabelValues(result(err)).Inc()
	if err != nil {
		return fmt.Errorf("renew the token: %w%s", err, hint(err, "auth/token/renew-self", ""))
	}
	asked := t.period
	t.set(i.now(), time.Duration(s.Auth.LeaseDuration)*time.Second, s.Auth.Renewable)
	i.setExpiryGauge()
	if t.ttl < asked*9/10 {
		t.capped = true
		i.log.Warn("the vault token reached its max TTL; replace it before it expires, or use AppRole",
			"expires_at", t.expiry())
	}
	i.log.Debug("renewed the vault token", "ttl", t.ttl)
	return nil
}

// parseSeconds reads a JSON number of seconds.
func parseSeconds(v any) (time.Duration, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("%v is not a number", v)
	}
	sec, err := n.Int64()
	return time.Duration(sec) * time.Second, err
}
