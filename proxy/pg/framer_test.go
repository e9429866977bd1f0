package pg

import (
	"math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// The framer finds message boundaries however the stream is split.
func TestFramerBoundaries(t *testing.T) {
	var stream []byte
	var ends []int
	for _, m := range []pgproto3.BackendMessage{
		&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("a")}}},
		&pgproto3.DataRow{Values: [][]byte{make([]byte, 70000)}},
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")},
		&pgproto3.ReadyForQuery{TxStatus: 'I'},
	} {
		b, err := m.Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		stream = append(stream, b...)
		ends = append(ends, len(stream))
	}
	isEnd := map[int]bool{0: true}
	for _, e := range ends {
		isEnd[e] = true
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		var f framer
		for pos := 0; pos < len(stream); {
			n := min(len(stream)-pos, 1+r.IntN(9000))
			if r.IntN(4) == 0 {
				n = min(len(stream)-pos, 1+r.IntN(6))
			}
			if !f.scan(stream[pos : pos+n]) {
				t.Fatalf("scan refused a valid stream at %d", pos)
			}
			pos += n
			if f.boundary() != isEnd[pos] {
				t.Fatalf("at %d boundary() = %v, want %v", pos, f.boundary(), isEnd[pos])
			}
		}
	}
	var f framer
	if f.scan([]byte{'Z', 0, 0, 0, 3}) {
		t.Fatalf("scan accepted a length of 3")
	}
}
