package rules

import (
	"strings"
	"testing"
)

func TestConnectTo(t *testing.T) {
	c, err := Parse("f.yaml", []byte("upstream:\n  connectTo: {\"API.Example.com:443\": \"127.0.0.1:8443\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Upstream.ConnectTo["api.example.com:443"]; got != "127.0.0.1:8443" {
		t.Errorf("connectTo[api.example.com:443] = %q, want 127.0.0.1:8443 (keys normalised)", got)
	}
	for _, bad := range []struct{ yaml, want string }{
		{`{"api.example.com": "127.0.0.1:1"}`, `f.yaml:2: upstream.connectTo.api.example.com: key must be host:port`},
		{`{"api.example.com:443": "evil.example.com:443"}`, `f.yaml:2: upstream.connectTo.api.example.com:443: value must be an IP literal`},
		{`{"api.example.com:443": "127.0.0.1"}`, `value must be ip:port`},
	} {
		_, err := Parse("f.yaml", []byte("upstream:\n  connectTo: "+bad.yaml+"\n"))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("connectTo %s: error %v, want it to contain %q", bad.yaml, err, bad.want)
		}
	}
}
