package session

import (
	"context"
	"fmt"
	"time"

	"github.com/sftproject/sft/api"
)

// openCountTimeout bounds a count of the open sessions: it answers a
// scrape or an admin's status, which should not wait long on a slow store.
const openCountTimeout = 2 * time.Second

// OpenSessions counts the sessions open now across every replica, by state
// (waiting, joined). It reads the store, so every replica reports the same
// numbers; it fails when the store does not answer within a few seconds.
func (s *Service) OpenSessions(ctx context.Context) (map[api.State]int, error) {
	ctx, cancel := context.WithTimeout(ctx, openCountTimeout)
	defer cancel()
	counts, err := s.o.Store.OpenCounts(ctx, s.now())
	if err != nil {
		return nil, fmt.Errorf("count open sessions: %w", err)
	}
	return counts, nil
}
