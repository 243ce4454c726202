package link

import (
	"fmt"

	"github.com/sftproject/sft/services/api"
)

// CheckManifest validates a manifest by the rules every receiver applies.
func CheckManifest(m api.Manifest) error {
	if len(m.Files) == 0 {
		return fmt.Errorf("%w: no entries", ErrBadManifest)
	}
	for _, f := range m.Files {
		if err := SafeName(f.Name); err != nil {
			return err
		}
	}
	return nil
}
