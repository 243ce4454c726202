//go:build !linux

package link

func renameNoReplace(tmp, dst string) error { return linkNoReplace(tmp, dst) }
