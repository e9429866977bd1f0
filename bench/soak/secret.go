package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"sync"
)

// secretScan counts where the credential shows up, raw or base64-encoded,
// in anything the soak got back from credproxy. Every count must be zero.
type secretScan struct {
	forms [][]byte
	mu    sync.Mutex
	hits  map[string]int // where ("responses", "audit", …) -> occurrences
}

func newSecretScan(key string) *secretScan {
	return &secretScan{
		forms: [][]byte{
			[]byte(key),
			[]byte(base64.StdEncoding.EncodeToString([]byte(key))),
			[]byte(base64.RawURLEncoding.EncodeToString([]byte(key))),
		},
		hits: map[string]int{},
	}
}

// scan records every occurrence of the credential in b under where; where
// is recorded with zero hits too, so the report shows what was searched.
func (s *secretScan) scan(where string, b []byte) {
	n := 0
	for _, f := range s.forms {
		n += bytes.Count(b, f)
	}
	s.mu.Lock()
	s.hits[where] += n
	s.mu.Unlock()
}

// scanHeader searches a response's header names and values.
func (s *secretScan) scanHeader(where string, h http.Header) {
	var b bytes.Buffer
	_ = h.Write(&b)
	s.scan(where, b.Bytes())
}

func (s *secretScan) scanFile(where, file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("search %s for the secret: %w", where, err)
	}
	s.scan(where, b)
	return nil
}

func (s *secretScan) result() (hits map[string]int, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hits = make(map[string]int, len(s.hits))
	for k, v := range s.hits {
		hits[k] = v
		total += v
	}
	return hits, total
}
