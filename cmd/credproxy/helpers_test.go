package main

import (
	"log/slog"
	"testing"

	"github.com/credproxy/credproxy/rules"
)

func mustLoad(t *testing.T, path string) *rules.Config {
	t.Helper()
	cfg, err := rules.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
