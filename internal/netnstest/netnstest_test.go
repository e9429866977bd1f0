package netnstest

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNamespacesLinkedAndRemoved(t *testing.T) {
	var a, b *NS
	t.Run("use", func(t *testing.T) {
		a, b = New(t), New(t)
		Link(t, a, b, "10.77.0.1/24", "10.77.0.2/24")
		b.Hosts(t, "10.77.0.2 upstream.test")
		ln := b.Listen(t, "tcp", "10.77.0.2:8080")
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				_, _ = io.WriteString(c, "hello from b\n")
				c.Close()
			}
		}()
		// The listener is only in b: from this process's own namespace,
		// 10.77.0.2 is some other host or none.
		if c, err := net.DialTimeout("tcp", "10.77.0.2:8080", 500*time.Millisecond); err == nil {
			_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			got, _ := io.ReadAll(c)
			c.Close()
			if string(got) == "hello from b\n" {
				t.Error("the test's own namespace reached the listener; want it only inside b")
			}
		}
		out := a.Run(t, "bash", "-c", "exec 3<>/dev/tcp/10.77.0.2/8080 && cat <&3")
		if out != "hello from b\n" {
			t.Errorf("from a: %q, want the listener in b", out)
		}
		if got := b.Run(t, "cat", "/etc/hosts"); !strings.Contains(got, "10.77.0.2 upstream.test") {
			t.Errorf("/etc/hosts in b: %q", got)
		}
	})
	for _, n := range []*NS{a, b} {
		if n == nil {
			continue
		}
		if _, err := os.Stat(filepath.Join("/var/run/netns", n.Name)); !os.IsNotExist(err) {
			t.Errorf("namespace %s still exists after its test: %v", n.Name, err)
		}
		if _, err := os.Stat(filepath.Join("/etc/netns", n.Name)); !os.IsNotExist(err) {
			t.Errorf("/etc/netns/%s still exists after its test: %v", n.Name, err)
		}
	}
}
