package link

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

func renameNoReplace(tmp, dst string) error {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EOPNOTSUPP):
		// Old kernel or a file system without RENAME_NOREPLACE.
		return linkNoReplace(tmp, dst)
	}
	return &os.LinkError{Op: "rename", Old: tmp, New: dst, Err: err}
}
