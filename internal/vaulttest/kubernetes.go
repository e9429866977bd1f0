package vaulttest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
)

// EnableKubernetes enables the kubernetes auth method at kubernetes/ (once)
// against a fake Kubernetes TokenReview API on 127.0.0.1, and creates role
// bound to namespace/serviceAccount with the given policies. It returns a
// file holding a service account JWT that the fake API accepts, for
// kubernetes login's jwtFile. The fake stops when the test ends.
func (s *Server) EnableKubernetes(t testing.TB, role, namespace, serviceAccount string, policies ...string) (jwtFile string) {
	t.Helper()
	uid := "uid-" + randomTag()
	jwt := mintJWT(t, map[string]any{
		"iss":                                    "kubernetes/serviceaccount",
		"sub":                                    "system:serviceaccount:" + namespace + ":" + serviceAccount,
		"kubernetes.io/serviceaccount/namespace": namespace,
		"kubernetes.io/serviceaccount/service-account.name": serviceAccount,
		"kubernetes.io/serviceaccount/service-account.uid":  uid,
		"iat": time.Now().Unix(),
	})
	api := httptest.NewServer(tokenReview(jwt, "system:serviceaccount:"+namespace+":"+serviceAccount, uid))
	t.Cleanup(api.Close)

	auths, err := s.Client.Sys().ListAuthWithContext(t.Context())
	if err != nil {
		t.Fatalf("vaulttest: list auth: %v", err)
	}
	if _, ok := auths["kubernetes/"]; !ok {
		if err := s.Client.Sys().EnableAuthWithOptionsWithContext(t.Context(), "kubernetes",
			&vaultapi.EnableAuthOptions{Type: "kubernetes"}); err != nil {
			t.Fatalf("vaulttest: enable kubernetes auth: %v", err)
		}
	}
	s.Write(t, "auth/kubernetes/config", map[string]any{
		"kubernetes_host":      api.URL,
		"disable_local_ca_jwt": true,
	})
	s.Write(t, "auth/kubernetes/role/"+role, map[string]any{
		"bound_service_account_names":      []string{serviceAccount},
		"bound_service_account_namespaces": []string{namespace},
		"token_policies":                   policies,
	})
	return WriteFile(t, "sa-token", jwt)
}

// tokenReview answers POST /apis/authentication.k8s.io/v1/tokenreviews:
// authenticated for jwt, not for anything else.
func tokenReview(jwt, username, uid string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
			http.NotFound(w, r)
			return
		}
		var req struct {
			Spec struct {
				Token string `json:"token"`
			} `json:"spec"`
		}
		body, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(body, &req)
		status := map[string]any{"authenticated": false}
		if req.Spec.Token == jwt {
			status = map[string]any{"authenticated": true, "user": map[string]any{"username": username, "uid": uid}}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "status": status,
		})
	})
}

// mintJWT signs claims with a throwaway RSA key (Vault only checks the
// signature when it is given public keys; the TokenReview decides).
func mintJWT(t testing.TB, claims map[string]any) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("vaulttest: rsa key: %v", err)
	}
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatalf("vaulttest: sign jwt: %v", err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}
