package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// floorStartWriteback asks the kernel to start writing [off, off+n) of f
// to disk without waiting, as the link's receiver does, so that the final
// fsync has little left to do. Only a hint: errors surface at that fsync.
func floorStartWriteback(f *os.File, off, n int64) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
	})
}
