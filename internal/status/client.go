package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/kforward/kforward/runner"
)

// ErrNotRunning is Fetch's error when nothing listens at the address
// (the connection is refused); errors.Is finds it in what Fetch returns.
var ErrNotRunning = errors.New("no kforward running")

// notRunning is ErrNotRunning at an address.
type notRunning struct{ addr string }

func (e notRunning) Error() string { return "no kforward running at " + e.addr }
func (e notRunning) Unwrap() error { return ErrNotRunning }

// Fetch asks the kforward serving at addr for its snapshot.
func Fetch(ctx context.Context, addr string) (runner.Snapshot, error) {
	var snap runner.Snapshot
	body, err := FetchJSON(ctx, addr)
	if err != nil {
		return snap, err
	}
	if err := json.Unmarshal(body, &snap); err != nil {
		return snap, fmt.Errorf("%s does not answer as kforward does: %w", addr, err)
	}
	return snap, nil
}

// FetchJSON returns the kforward at addr's snapshot as it sent it.
func FetchJSON(ctx context.Context, addr string) ([]byte, error) {
	if err := checkDialAddr(addr); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if connRefused(err) {
			return nil, notRunning{addr}
		}
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err // not `Get "http://…/status": `, which says addr again
		}
		return nil, fmt.Errorf("ask kforward at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("ask kforward at %s: %s", addr, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("ask kforward at %s: %w", addr, err)
	}
	return body, nil
}

// checkDialAddr refuses an address Fetch cannot mean: without a port, an
// HTTP client would quietly try port 80.
func checkDialAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
		return fmt.Errorf("invalid address %q: want HOST:PORT, e.g. %s", addr, DefaultAddr)
	}
	return nil
}
