package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/kforward/kforward/runner"
)

// ErrNotRunning is Fetch's error when nothing answers at the address.
var ErrNotRunning = errors.New("no kforward running")

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
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if _, ok := errors.AsType[*net.OpError](err); ok {
			return nil, fmt.Errorf("%w at %s", ErrNotRunning, addr)
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
