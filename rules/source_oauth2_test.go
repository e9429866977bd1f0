package rules

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
)

func TestLoadOAuth2Sources(t *testing.T) {
	c := mustLoad(t, "testdata/oauth2.yaml")
	idp := c.Sources["idp"]
	if idp.Type != SourceOAuth2 || idp.OAuth2 == nil {
		t.Fatalf("sources.idp: type %q, oauth2 %v", idp.Type, idp.OAuth2)
	}
	o := idp.OAuth2
	for _, tc := range []struct{ name, got, want string }{
		{"grant", o.Grant, "client_credentials"},
		{"tokenURL", o.TokenURL, "https://idp.example.com/oauth/token"},
		{"clientID", o.ClientID, "credproxy"},
		{"clientSecretFile", o.ClientSecretFile, filepath.Join(absTestdata(t), "oauth2-client-secret")},
		{"audience", o.Audience, "https://api.example.com"},
		{"revocationURL", o.RevocationURL, "https://idp.example.com/revoke"},
		{"rt.grant", c.Sources["rt"].OAuth2.Grant, "refresh_token"},
		{"rt.refreshTokenFile", c.Sources["rt"].OAuth2.RefreshTokenFile, filepath.Join(absTestdata(t), "oauth2-refresh-token")},
		{"gcp.keyFile", c.Sources["gcp"].OAuth2.KeyFile, filepath.Join(absTestdata(t), "sa-key.json")},
		{"vertex.source", c.Credentials["vertex"].Source, "gcp"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %q, want %q", tc.name, tc.got, tc.want)
		}
	}
	if !slices.Equal(o.Scopes, []string{"api.read", "api.write"}) {
		t.Errorf("scopes = %v", o.Scopes)
	}
}

func TestOAuth2SourceErrors(t *testing.T) {
	path := "testdata/bad_oauth2.yaml"
	_, err := Load(path)
	var errs ConfigErrors
	if !errors.As(err, &errs) {
		t.Fatalf("Load: %v; want ConfigErrors", err)
	}
	for _, w := range []string{
		"2: sources.a.tokenURL: must be https (http only to a loopback address)",
		"2: sources.a.clientSecretFile: required for grant client_credentials",
		`3: sources.b.grant: must be client_credentials, refresh_token, jwt_bearer, not "password"`,
		"3: sources.b.tokenURL: must not carry credentials in the URL",
		"4: sources.c.refreshTokenFile: required for grant refresh_token",
		"4: sources.c.clientID: required for grant refresh_token",
		"4: sources.c.keyFile: only applies to grant jwt_bearer, not refresh_token",
		"5: sources.d.keyFile: required for grant jwt_bearer",
		"5: sources.d.clientSecretFile: only applies to grant client_credentials or refresh_token, not jwt_bearer",
		"5: sources.d.tokenURL: required",
		"6: sources.e.addres: unknown key",
		"6: sources.e.privateKeyFile: open ",
		"6: sources.e.clientID: required with privateKeyFile",
		`6: sources.e.tokenURL: want an https:// URL, not "ftp://idp/x"`,
		"6: sources.e.revocationURL: must be https",
		"8: credentials.x.path: does not apply to oauth2 source a",
		"9: credentials.y.field: does not apply to oauth2 source c",
	} {
		if !hasLinePrefix(err.Error(), path+":"+w) {
			t.Errorf("no error line starting %q; got:\n%v", path+":"+w, err)
		}
	}
}
