package proxy_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sigv4ExecConfig signs Bedrock requests with a key an exec source's helper
// prints in the AWS credential_process shape ({{HELPER}}: its path).
const sigv4ExecConfig = `
upstream: {caFiles: ["{{UPSTREAM_CA}}"]}
sources:
  aws-process:
    type: exec
    command: ["{{HELPER}}", --profile, agents]
credentials:
  aws: {source: aws-process, ttl: 15m}
rules:
  - name: bedrock
    hosts: [bedrock-runtime.us-east-1.amazonaws.com]
    credential: aws
    sign: {aws_sigv4: {service: bedrock, region: us-east-1}}
`

// An exec helper that prints what `aws configure export-credentials --format
// process` does (with an Expiration) gives the key credproxy signs with:
// botocore verifies the signature, and the key's parts are masked in echoes.
func TestSigV4WithExecCredentialProcess(t *testing.T) {
	helper := filepath.Join(t.TempDir(), "aws-credential-process")
	out := fmt.Sprintf(`{"Version": 1, "AccessKeyId": %q, "SecretAccessKey": %q, "SessionToken": %q, "Expiration": %q}`,
		awsTestKeyID, awsTestSecret, awsTestToken, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	if err := os.WriteFile(helper, []byte("#!/bin/sh\ncat <<'EOF'\n"+out+"\nEOF\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := newPKI(t, t.TempDir())
	addr := startSigV4Upstream(t, p)
	e := startProxy(t, p, strings.ReplaceAll(sigv4ExecConfig, "{{HELPER}}", helper), map[string]string{bedrockHost + ":443": addr})
	c := e.client(e.ca)

	req, _ := http.NewRequest("GET", "https://"+bedrockHost+"/foundation-models?byProvider=anthropic", nil)
	placeholderSignature(req.Header)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	v := readVerdict(t, resp)
	if resp.StatusCode != http.StatusOK || !v.OK || !v.Token {
		t.Fatalf("upstream did not verify the signature with the helper's key and session token: %d %q (token %v)", resp.StatusCode, v.Reason, v.Token)
	}
	if v.AKID == awsTestKeyID || !strings.Contains(v.AKID, "[redacted]") {
		t.Errorf("key id echoed as %q; want it masked", v.AKID)
	}

	// An upstream echoing the secret key and token: masked.
	req, _ = http.NewRequest("GET", "https://"+bedrockHost+"/echo-secret", nil)
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	v = readVerdict(t, resp)
	if !v.OK || v.Echo == "" {
		t.Fatalf("echo request not verified: %q", v.Reason)
	}
	for _, s := range []string{awsTestSecret, awsTestToken} {
		if strings.Contains(v.Echo, s) || strings.Contains(fmt.Sprint(resp.Header), s) {
			t.Errorf("the echo carries a secret: %q %v", v.Echo, resp.Header)
		}
	}
}
