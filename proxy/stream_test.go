package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// sseHandler sends one event, then holds the stream open until release is
// closed. A proxy that buffered would never deliver the first event.
func sseHandler(release <-chan struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// NDJSON is chunked but not SSE: goproxy's own plain-HTTP path would
		// buffer it until the upstream closed.
		ct := "text/event-stream"
		if strings.HasSuffix(r.URL.Path, ".ndjson") {
			ct = "application/x-ndjson"
		}
		w.Header().Set("Content-Type", ct)
		io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: second\n\n")
	}
}

func TestSSEFirstEventArrivesBeforeUpstreamFinishes(t *testing.T) {
	for _, url := range []string{
		"https://api.example.test/v1/stream", "http://localhost/v1/stream",
		"https://api.example.test/v1/stream.ndjson", "http://localhost/v1/stream.ndjson",
	} {
		t.Run(url, func(t *testing.T) {
			release := make(chan struct{})
			e, _, _, _ := newEnv(t, "", sseHandler(release))
			resp, err := e.client(e.ca).Get(url)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			first := make(chan struct{})
			var line string
			br := bufio.NewReader(resp.Body)
			go func() {
				line, _ = br.ReadString('\n')
				close(first)
			}()
			// The upstream has not finished: it waits on release.
			waitOrFail(t, first, "the first SSE event while the upstream holds the stream open")
			close(release)
			if line != "data: first\n" {
				t.Fatalf("first line %q", line)
			}
			rest, _ := io.ReadAll(br)
			if !strings.Contains(string(rest), "data: second") {
				t.Errorf("rest of stream %q lacks the second event", rest)
			}
		})
	}
}

const tenMiB = 10 << 20

// TestLargeBodiesStream moves 10 MiB each way. Each side waits until the
// other has seen the first MiB before sending the rest, so a proxy that
// buffered a whole body would deadlock instead of passing.
func TestLargeBodiesStream(t *testing.T) {
	uploadHalf, downloadHalf := make(chan struct{}), make(chan struct{})
	var upSum [32]byte
	e, _, _, _ := newEnv(t, "", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			h := sha256.New()
			if _, err := io.CopyN(h, r.Body, 1<<20); err != nil {
				t.Errorf("upload first MiB: %v", err)
				return
			}
			close(uploadHalf)
			io.Copy(h, r.Body)
			copy(upSum[:], h.Sum(nil))
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(pattern(0, 1<<20))
		w.(http.Flusher).Flush()
		if !waitOrErr(t, downloadHalf, "the client to receive the first MiB") {
			return
		}
		w.Write(pattern(1<<20, tenMiB-1<<20))
	})
	c := e.client(e.ca)

	pr, pw := io.Pipe()
	go func() {
		pw.Write(pattern(0, 1<<20))
		if !waitOrErr(t, uploadHalf, "the upstream to receive the first MiB of the upload") {
			pw.CloseWithError(io.ErrUnexpectedEOF)
			return
		}
		pw.Write(pattern(1<<20, tenMiB-1<<20))
		pw.Close()
	}()
	resp, err := c.Post("https://api.example.test/v1/upload", "application/octet-stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := sha256.Sum256(pattern(0, tenMiB)); upSum != want || resp.StatusCode != 200 {
		t.Fatalf("upload: status %d, upstream digest mismatch=%v", resp.StatusCode, upSum != want)
	}

	resp, err = c.Get("https://api.example.test/v1/download")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, 1<<20)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	close(downloadHalf)
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got := append(first, rest...); !bytes.Equal(got, pattern(0, tenMiB)) {
		t.Fatalf("download: got %d bytes, content differs", len(got))
	}
}

// pattern is n deterministic bytes starting at offset off.
func pattern(off, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((off + i) * 7 % 251)
	}
	return b
}

// TestCurlThroughProxy runs the real curl binary with HTTPS_PROXY.
func TestCurlThroughProxy(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl is required (CI installs it): ", err)
	}
	e, _, up, _ := newEnv(t, "", okHandler)
	cmd := exec.Command(curl, "-sS", "--fail-with-body", "--cacert", e.caFile,
		"-H", "Authorization: Bearer placeholder", "https://api.example.test/v1/models")
	cmd.Env = append(os.Environ(), "HTTPS_PROXY="+e.url.String(), "NO_PROXY=", "no_proxy=")
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "ok" {
		t.Fatalf("curl: %v: %s", err, out)
	}
	if a := up.seen()[0].Header.Get("Authorization"); a != "Bearer "+testKey {
		t.Errorf("upstream Authorization via curl = %q", a)
	}
}
