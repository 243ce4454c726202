package relay

import (
	"container/heap"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/token"
)

// usedTickets remembers the IDs of admitted tickets until they expire, so
// none is admitted twice; at most max at once.
type usedTickets struct {
	max  int
	ids  map[string]struct{}
	heap expiries
}

type expiry struct {
	id string
	at time.Time
}

// expiries is a min-heap by time.
type expiries []expiry

func (h expiries) Len() int           { return len(h) }
func (h expiries) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiries) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiries) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiries) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// add records id, admitted at now and valid until expires; an ID seen
// before, or one too many, is refused.
func (u *usedTickets) add(id string, expires, now time.Time) *api.Error {
	if u.ids == nil {
		u.ids = map[string]struct{}{}
	}
	// Verify accepts a ticket up to token.Leeway after its expiry.
	for len(u.heap) > 0 && now.After(u.heap[0].at.Add(token.Leeway)) {
		delete(u.ids, heap.Pop(&u.heap).(expiry).id)
	}
	if _, ok := u.ids[id]; ok {
		return api.Errorf(api.CodeForbidden, "ticket already used")
	}
	if len(u.ids) >= u.max {
		return api.Errorf(api.CodeThrottled, "relay admitted too many tickets lately; retry later")
	}
	u.ids[id] = struct{}{}
	heap.Push(&u.heap, expiry{id: id, at: expires})
	return nil
}
