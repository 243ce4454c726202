//go:build !unix

package link

import (
	"errors"
	"runtime"
)

const isWindows = runtime.GOOS == "windows"

// FreeSpace is not known on this platform; the check is skipped.
func FreeSpace(string) (int64, error) { return 0, errors.ErrUnsupported }
