// Command oauthserver is a real OAuth 2.0 authorization server for
// credproxy's tests only: zitadel/oidc's OpenID provider (package op, which
// implements the token, introspection and revocation endpoints) over an
// in-memory token store whose lifetimes the test sets. It is a separate
// module so that the provider's dependencies never enter credproxy's go.mod.
//
//	oauthserver -cert leaf.pem -key leaf-key.pem -ready ready.json -token-ttl 2s \
//	  -client cc-client:SECRET -refresh-client rt-client:SECRET -resource upstream:SECRET
//
// It listens on 127.0.0.1 (HTTPS, the given certificate) and writes
// {"issuer": "https://127.0.0.1:PORT"} to the -ready file once serving. Endpoints
// are op's defaults: /oauth/token, /oauth/introspect, /revoke. Two test-only
// endpoints sit beside them: POST /test/refresh-token issues a refresh token
// to the refresh client (standing in for a user's consent), and GET
// /test/stats counts what the server did.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/zitadel/oidc/v3/pkg/op"
)

func main() {
	var (
		addr      = flag.String("addr", "127.0.0.1:0", "listen address (127.0.0.1 only)")
		certFile  = flag.String("cert", "", "TLS certificate (PEM)")
		keyFile   = flag.String("key", "", "TLS key (PEM)")
		ready     = flag.String("ready", "", "file to write {\"issuer\": ...} to once serving")
		ttl       = flag.Duration("token-ttl", 2*time.Second, "access token lifetime")
		cc        = flag.String("client", "cc-client:cc-secret", "client_credentials client id:secret")
		rt        = flag.String("refresh-client", "rt-client:rt-secret", "refresh_token client id:secret")
		resource  = flag.String("resource", "upstream:upstream-secret", "resource server id:secret (introspection)")
		cryptoKey = flag.String("crypto-key", "credproxy-test", "seed of the key that encrypts opaque tokens")
	)
	flag.Parse()
	if *certFile == "" || *keyFile == "" || *ready == "" {
		log.Fatal("oauthserver: -cert, -key and -ready are required")
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	issuer := "https://" + ln.Addr().String()
	st := newStore(*ttl, split(*cc), split(*rt), split(*resource))
	provider, err := op.NewProvider(&op.Config{
		CryptoKey:             sha256.Sum256([]byte(*cryptoKey)),
		CryptoKeyId:           "key1",
		AuthMethodPost:        true,
		GrantTypeRefreshToken: true,
	}, st, op.StaticIssuer(issuer), op.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, nil))))
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /test/refresh-token", st.seedRefreshToken)
	mux.HandleFunc("GET /test/stats", st.serveStats)
	mux.Handle("/", provider)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ServeTLS(ln, *certFile, *keyFile); err != http.ErrServerClosed {
			log.Fatal(err)
		}
	}()
	b, _ := json.Marshal(map[string]string{"issuer": issuer})
	if err := os.WriteFile(*ready+".tmp", b, 0o600); err != nil {
		log.Fatal(err)
	}
	if err := os.Rename(*ready+".tmp", *ready); err != nil {
		log.Fatal(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
}

type idSecret struct{ id, secret string }

func split(s string) idSecret {
	id, secret, ok := strings.Cut(s, ":")
	if !ok || id == "" || secret == "" {
		log.Fatalf("oauthserver: want id:secret, not %q", s)
	}
	return idSecret{id, secret}
}
