package rules

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestTransparent(t *testing.T) {
	c := mustLoad(t, "testdata/transparent.yaml")
	tr := c.Transparent
	if !tr.Enabled() || tr.Listen != "127.0.0.1:15001" || tr.ListenPort() != 15001 {
		t.Errorf("listen = %q (port %d), want 127.0.0.1:15001", tr.Listen, tr.ListenPort())
	}
	if !slices.Equal(tr.Ports, []int{443, 80}) {
		t.Errorf("ports = %v, want the default [443 80]", tr.Ports)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("fd00::/64")}
	if !slices.Equal(tr.ExcludeCIDRs, want) {
		t.Errorf("excludeCIDRs = %v, want %v", tr.ExcludeCIDRs, want)
	}
	if m := mustLoad(t, "testdata/minimal.yaml"); m.Transparent.Enabled() {
		t.Errorf("a config without transparent: has it enabled: %+v", m.Transparent)
	}
}

func TestTransparentErrors(t *testing.T) {
	path := filepath.Join("testdata", "bad_transparent.yaml")
	_, err := Load(path)
	if err == nil {
		t.Fatal("Load succeeded, want errors")
	}
	for _, w := range []string{
		"3: transparent: cannot be combined with clients",
		"4: transparent.listen: needs a fixed port",
		`5: transparent.ports[1]: want a port between 1 and 65535, not "0"`,
		`5: transparent.ports[2]: want a port between 1 and 65535, not "https"`,
		"6: transparent.excludeCIDRs[0]: want a CIDR",
		"7: transparent.mode: unknown key",
	} {
		if !hasLinePrefix(err.Error(), path+":"+w) {
			t.Errorf("no error line starting %q; got:\n%v", path+":"+w, err)
		}
	}
	_, err = Parse("x.yaml", []byte("transparent: {ports: [443]}\n"))
	if err == nil || !strings.Contains(err.Error(), "x.yaml:1: transparent.listen: required") {
		t.Errorf("a transparent block without listen: %v, want x.yaml:1: transparent.listen: required", err)
	}
}
