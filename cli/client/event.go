package client

import (
	"encoding/json"
	"fmt"

	"github.com/sftproject/sft/api"
)

// decodeEvent parses one event a watch relay delivered.
func decodeEvent(data []byte) (api.Event, error) {
	var ev api.Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return api.Event{}, fmt.Errorf("watch: undecodable event: %w", err)
	}
	return ev, nil
}
