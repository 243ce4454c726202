package relay

import (
	"fmt"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
)

// Used ticket IDs are refused until they expire, then forgotten; memory
// stays within the bound.
func TestUsedTickets(t *testing.T) {
	now := time.Now()
	u := usedTickets{max: 3}
	for i := range 3 {
		if e := u.add(fmt.Sprint(i), now.Add(time.Duration(i+1)*time.Minute), now); e != nil {
			t.Fatal(e)
		}
	}
	if e := u.add("1", now.Add(time.Hour), now); api.CodeOf(e) != api.CodeForbidden {
		t.Errorf("a used ID: %v, want forbidden", e)
	}
	if e := u.add("3", now.Add(time.Hour), now); api.CodeOf(e) != api.CodeThrottled {
		t.Errorf("one too many: %v, want throttled", e)
	}
	// Past the first two expiries (and the leeway Verify allows): they
	// are forgotten, so "0" is new again (its ticket would fail Verify).
	later := now.Add(2*time.Minute + time.Hour/60)
	if e := u.add("0", later.Add(time.Hour), later); e != nil {
		t.Errorf("an expired ID: %v", e)
	}
	if len(u.ids) != 2 || len(u.heap) != 2 {
		t.Errorf("%d IDs and %d expiries kept, want 2", len(u.ids), len(u.heap))
	}
	if e := u.add("2", later.Add(time.Hour), later); api.CodeOf(e) != api.CodeForbidden {
		t.Errorf("an unexpired ID: %v, want forbidden", e)
	}
}
