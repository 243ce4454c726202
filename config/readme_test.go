package config

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// The README's configuration reference must list every setting with its
// environment variable and default; on a mismatch this prints the table to
// paste.
func TestREADMEConfigReference(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	want.WriteString("| key | environment | default | meaning |\n|---|---|---|---|\n")
	for _, k := range Keys([]string{"HOME=~"}) {
		fmt.Fprintf(&want, "| `%s` | `%s` | %s | %s |\n", k.Name, k.Env(), showDefault(k.Default), strings.NewReplacer("<", "&lt;", ">", "&gt;").Replace(k.Help))
	}
	if !strings.Contains(string(b), want.String()) {
		t.Fatalf("README.md's configuration reference is out of date; it should contain:\n\n%s", want.String())
	}
}

func showDefault(v any) string {
	switch d := v.(type) {
	case string:
		if d == "" {
			return ""
		}
		return "`" + d + "`"
	case []string:
		if len(d) == 0 {
			return ""
		}
		return "`" + strings.Join(d, ",") + "`"
	case time.Duration:
		s := d.String() // 12h0m0s, 15m0s, 30s
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
		return "`" + s + "`"
	}
	return fmt.Sprint(v)
}
