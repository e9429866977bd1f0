package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/smithy-go/aws-http-auth/credentials"
	"github.com/aws/smithy-go/aws-http-auth/sigv4"
	v4 "github.com/aws/smithy-go/aws-http-auth/v4"
)

// The AWS key the tests sign with: test values, in the credential_process
// JSON shape that `aws configure export-credentials --format process` prints.
const (
	awsTestKeyID  = "AKIDCREDPROXYTEST01"
	awsTestSecret = "sk-test-sigv4-secret-0123456789abcdefABCD"
	awsTestToken  = "sk-test-sigv4-session-token-0123456789+/="
)

var awsTestCredJSON = fmt.Sprintf(`{"Version": 1, "AccessKeyId": %q, "SecretAccessKey": %q, "SessionToken": %q}`,
	awsTestKeyID, awsTestSecret, awsTestToken)

const (
	bedrockHost = "bedrock-runtime.us-east-1.amazonaws.com"
	s3Host      = "s3.us-east-1.amazonaws.com"
	ddbHost     = "dynamodb.us-east-1.amazonaws.com"
)

// sigv4Config is the README's Bedrock example, plus an S3 rule that streams
// bodies unsigned; bedrock's body bound is small so the test can exceed it.
const sigv4Config = `
upstream: {caFiles: ["{{UPSTREAM_CA}}"]}
credentials:
  aws: {source: env, env: CREDPROXY_TEST_AWS}
rules:
  - name: bedrock
    hosts: [bedrock-runtime.us-east-1.amazonaws.com]
    credential: aws
    sign: {aws_sigv4: {service: bedrock, region: us-east-1, maxBodyBytes: 65536}}
  - name: s3
    hosts: [s3.us-east-1.amazonaws.com]
    credential: aws
    sign: {aws_sigv4: {service: s3, region: us-east-1, payload: unsigned}}
  - name: dynamodb
    hosts: [dynamodb.us-east-1.amazonaws.com]
    credential: aws
    sign: {aws_sigv4: {service: dynamodb, region: us-east-1}}
`

// botocorePython is an interpreter that can import botocore: $CREDPROXY_PYTHON,
// Debian's /usr/bin/python3 (scripts/test.sh installs python3-botocore), or
// the python3 on PATH.
func botocorePython(t *testing.T) string {
	t.Helper()
	var tried []string
	for _, bin := range []string{os.Getenv("CREDPROXY_PYTHON"), "/usr/bin/python3", "python3"} {
		if bin == "" {
			continue
		}
		path, err := exec.LookPath(bin)
		if err != nil {
			tried = append(tried, bin+": "+err.Error())
			continue
		}
		out, err := exec.Command(path, "-c", "import botocore").CombinedOutput()
		if err == nil {
			return path
		}
		tried = append(tried, fmt.Sprintf("%s: %v %s", path, err, bytes.TrimSpace(out)))
	}
	t.Fatalf("a python3 with botocore is required (scripts/test.sh installs python3-botocore): %s", strings.Join(tried, "; "))
	return ""
}

// startSigV4Upstream runs testdata/sigv4_upstream.py, an HTTPS server on
// 127.0.0.1 that checks each request's SigV4 signature with botocore,
// serving a certificate from p for the test hosts. It returns its address.
func startSigV4Upstream(t *testing.T, p *pki) string {
	t.Helper()
	py := botocorePython(t)
	dir := t.TempDir()
	leaf, err := p.ca.SignLeaf(bedrockHost, s3Host, ddbHost)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leaf.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, cfgFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "cfg.json")
	writePEM(t, certFile, "CERTIFICATE", leaf.Certificate[0])
	writePEM(t, keyFile, "PRIVATE KEY", keyDER)
	cfg, _ := json.Marshal(map[string]any{"cert": certFile, "key": keyFile,
		"keys": map[string]any{awsTestKeyID: map[string]string{"secret": awsTestSecret, "token": awsTestToken}}})
	if err := os.WriteFile(cfgFile, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs("testdata/sigv4_upstream.py")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "-u", script, cfgFile)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	port := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		port <- strings.TrimSpace(strings.TrimPrefix(line, "PORT "))
	}()
	select {
	case pn := <-port:
		if pn == "" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("sigv4 upstream did not start: %s", stderr.String())
		}
		return "127.0.0.1:" + pn
	case <-time.After(30 * time.Second):
		t.Fatalf("sigv4 upstream did not print its port in 30s: %s", stderr.String())
	}
	return ""
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// verdict is what the verifying upstream answers.
type verdict struct {
	OK            bool     `json:"ok"`
	Reason        string   `json:"reason"`
	AKID          string   `json:"akid"`
	Service       string   `json:"service"`
	Region        string   `json:"region"`
	SignedHeaders []string `json:"signed_headers"`
	QueryMode     bool     `json:"query_mode"`
	Token         bool     `json:"token"`
	Payload       *string  `json:"payload"`
	Path          string   `json:"path"`
	Query         string   `json:"query"`
	BodyLen       int      `json:"body_len"`
	Chunked       bool     `json:"chunked"`
	Echo          string   `json:"echo"`
}

func readVerdict(t *testing.T, resp *http.Response) verdict {
	t.Helper()
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var v verdict
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("upstream answer %d is not JSON: %q", resp.StatusCode, data)
	}
	return v
}

// placeholderSignature is what an AWS SDK configured with a dummy key sends.
func placeholderSignature(h http.Header) {
	h.Add("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAPLACEHOLDER/20200101/us-east-1/bedrock/aws4_request, "+
		"SignedHeaders=host;x-amz-date, Signature="+strings.Repeat("0", 64))
	h.Add("Authorization", "Bearer second-placeholder")
	h.Set("X-Amz-Date", "20200101T000000Z")
	h.Set("X-Amz-Security-Token", "placeholder-token")
	h.Set("X-Amz-Content-Sha256", strings.Repeat("f", 64))
}

func TestSigV4SignsThroughProxy(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_AWS", awsTestCredJSON)
	p := newPKI(t, t.TempDir())
	addr := startSigV4Upstream(t, p)
	e := startProxy(t, p, sigv4Config, map[string]string{bedrockHost + ":443": addr, s3Host + ":443": addr, ddbHost + ":443": addr})
	c := e.client(e.ca)

	send := func(t *testing.T, method, url string, body io.Reader, length int64, hdr http.Header) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, url, body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = length
		for k, vs := range hdr {
			req.Header[k] = vs
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	verified := func(t *testing.T, resp *http.Response) verdict {
		t.Helper()
		v := readVerdict(t, resp)
		if resp.StatusCode != http.StatusOK || !v.OK {
			t.Fatalf("upstream did not verify the signature: %d %q", resp.StatusCode, v.Reason)
		}
		// The verifier knows no other key, so OK means credproxy's signed;
		// the key id it echoes is masked, as every value of the credential.
		if !v.Token || v.AKID == awsTestKeyID || !strings.Contains(v.AKID, "[redacted]") {
			t.Errorf("token sent %v, key id echoed as %q; want the session token sent and the key id masked", v.Token, v.AKID)
		}
		return v
	}

	t.Run("GET with query, placeholder signature replaced", func(t *testing.T) {
		h := http.Header{}
		placeholderSignature(h)
		resp := send(t, "GET", "https://"+bedrockHost+"/foundation-models?byProvider=anthropic&a=1", nil, 0, h)
		v := verified(t, resp)
		if v.Service != "bedrock" || v.Region != "us-east-1" || v.QueryMode {
			t.Errorf("scope %s/%s query mode %v, want bedrock/us-east-1 in the header", v.Service, v.Region, v.QueryMode)
		}
		if v.Query != "byProvider=anthropic&a=1" {
			t.Errorf("upstream query %q, want it as the agent sent it", v.Query)
		}
		if v.Payload != nil {
			t.Errorf("x-amz-content-sha256 %q sent to bedrock; only S3 needs it", *v.Payload)
		}
	})

	t.Run("POST body with an x-amz header of the agent's", func(t *testing.T) {
		body := `{"anthropic_version":"bedrock-2023-05-31","messages":[{"role":"user","content":"hi"}]}`
		h := http.Header{"Content-Type": {"application/json"}, "X-Amz-Bedrock-Trace": {"ENABLED"}}
		placeholderSignature(h)
		resp := send(t, "POST", "https://"+bedrockHost+"/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke",
			strings.NewReader(body), int64(len(body)), h)
		v := verified(t, resp)
		if v.BodyLen != len(body) || !contains(v.SignedHeaders, "x-amz-bedrock-trace") {
			t.Errorf("body %d bytes, signed %v; want %d bytes and x-amz-bedrock-trace signed", v.BodyLen, v.SignedHeaders, len(body))
		}
		if v.Path != "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke" {
			t.Errorf("upstream path %q, want the encoded ':' kept", v.Path)
		}
	})

	t.Run("streamed body of unknown length is buffered and signed", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			for i := 0; i < 64; i++ {
				_, _ = fmt.Fprintf(pw, "chunk %02d of a streamed request body\n", i)
			}
			_ = pw.Close()
		}()
		resp := send(t, "POST", "https://"+bedrockHost+"/model/m/invoke", pr, -1, http.Header{})
		v := verified(t, resp)
		if v.BodyLen != 64*len("chunk 00 of a streamed request body\n") || v.Chunked {
			t.Errorf("upstream got %d bytes (chunked %v), want the whole body with a Content-Length", v.BodyLen, v.Chunked)
		}
	})

	t.Run("unsigned payload streams through", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			for i := 0; i < 32; i++ {
				_, _ = fmt.Fprintf(pw, "part %02d\n", i)
			}
			_ = pw.Close()
		}()
		h := http.Header{}
		placeholderSignature(h)
		resp := send(t, "PUT", "https://"+s3Host+"/bucket/streamed.txt", pr, -1, h)
		v := verified(t, resp)
		if v.Payload == nil || *v.Payload != "UNSIGNED-PAYLOAD" || !v.Chunked || v.BodyLen != 32*len("part 00\n") {
			t.Errorf("payload %v chunked %v body %d, want UNSIGNED-PAYLOAD streamed chunked, whole", v.Payload, v.Chunked, v.BodyLen)
		}
	})

	t.Run("reserved and encoded characters in path and query", func(t *testing.T) {
		q := "prefix=a%2Fb&check=%E2%9C%93&sp=a%20b&plus=a%2Bb&empty=&tilde=~t&star=%2A&b=2&b=1&Upper=X&low=%7e"
		for _, target := range []string{
			"https://" + bedrockHost + "/model/a%3Ab/c%2Cd/invoke-with-response-stream?" + q,
			"https://" + s3Host + "/bucket/key%20with%20space/%E2%9C%93%2B.txt?" + q,
		} {
			resp := send(t, "GET", target, nil, 0, http.Header{})
			v := verified(t, resp)
			if v.Query != q {
				t.Errorf("%s: upstream query %q, want it as sent", target, v.Query)
			}
		}
	})

	t.Run("presigned URL is re-signed in the query", func(t *testing.T) {
		target := "https://" + s3Host + "/bucket/obj.txt?versionId=3&X-Amz-Algorithm=AWS4-HMAC-SHA256" +
			"&X-Amz-Credential=AKIAPLACEHOLDER%2F20200101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20200101T000000Z" +
			"&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Security-Token=placeholder&X-Amz-Signature=" + strings.Repeat("0", 64)
		resp := send(t, "GET", target, nil, 0, http.Header{})
		v := verified(t, resp)
		if !v.QueryMode || strings.Contains(v.Query, "AKIAPLACEHOLDER") || !strings.Contains(v.Query, "versionId=3") ||
			!strings.Contains(v.Query, "X-Amz-Expires=60") {
			t.Errorf("query mode %v, query %q: want a query signature of credproxy's alone, keeping versionId and X-Amz-Expires", v.QueryMode, v.Query)
		}
	})

	t.Run("echoed secret, token and key id are masked", func(t *testing.T) {
		resp := send(t, "GET", "https://"+bedrockHost+"/echo-secret", nil, 0, http.Header{})
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		all := string(data) + resp.Header.Get("X-Echo")
		for _, s := range []string{awsTestSecret, awsTestToken, awsTestKeyID} {
			if strings.Contains(all, s) {
				t.Errorf("agent saw %q in %d %s (X-Echo %q)", s, resp.StatusCode, data, resp.Header.Get("X-Echo"))
			}
		}
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(data), "[redacted]") {
			t.Errorf("echo: %d %s, want 200 with the values masked", resp.StatusCode, data)
		}
	})

	t.Run("body over maxBodyBytes is refused", func(t *testing.T) {
		big := strings.Repeat("x", 65537)
		resp := send(t, "POST", "https://"+bedrockHost+"/model/m/invoke", strings.NewReader(big), int64(len(big)), http.Header{})
		msg, rule := refusedAs(t, resp, "body-too-large")
		if resp.StatusCode != http.StatusRequestEntityTooLarge || rule != "bedrock" || !strings.Contains(msg, "65536") {
			t.Errorf("refusal %d rule %q %q, want 413 for rule bedrock naming the 65536-byte bound", resp.StatusCode, rule, msg)
		}
		pr, pw := io.Pipe()
		go func() { _, _ = io.Copy(pw, strings.NewReader(big)); _ = pw.Close() }()
		resp = send(t, "POST", "https://"+bedrockHost+"/model/m/invoke", pr, -1, http.Header{})
		if _, _ = refusedAs(t, resp, "body-too-large"); resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("streamed oversized body: %d, want 413", resp.StatusCode)
		}
	})

	t.Run("a real AWS SDK with a placeholder key", func(t *testing.T) {
		// botocore as the agent: it signs with its dummy key, credproxy
		// re-signs, the upstream verifies; 403 would raise ClientError.
		script := `
import botocore.session
c = botocore.session.get_session().create_client("dynamodb", region_name="us-east-1",
    aws_access_key_id="AKIAPLACEHOLDER", aws_secret_access_key="placeholder-secret",
    aws_session_token="placeholder-token")
r = c.list_tables(Limit=5)
print("status", r["ResponseMetadata"]["HTTPStatusCode"])
`
		cmd := exec.Command(botocorePython(t), "-c", script)
		cmd.Env = append(os.Environ(), "HTTPS_PROXY="+e.url.String(), "https_proxy="+e.url.String(),
			"AWS_CA_BUNDLE="+e.caFile, "NO_PROXY=", "no_proxy=", "AWS_CONFIG_FILE=/dev/null",
			"AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "status 200") {
			t.Fatalf("botocore through credproxy: %v\n%s", err, out)
		}
	})

	t.Run("a query the pipeline cleans is signed as forwarded", func(t *testing.T) {
		// httputil.ReverseProxy drops pairs that do not parse (';', bad
		// escapes) before credproxy decides: the signature covers what
		// is left, which is what the upstream gets.
		resp := send(t, "GET", "https://"+bedrockHost+"/x?a=1;b=2&c=%zz&d=4", nil, 0, http.Header{})
		if v := verified(t, resp); v.Query != "d=4" {
			t.Errorf("upstream query %q, want d=4", v.Query)
		}
	})

	t.Run("requests it cannot sign as sent are refused", func(t *testing.T) {
		h := http.Header{"Content-Encoding": {"aws-chunked"}, "X-Amz-Content-Sha256": {"STREAMING-UNSIGNED-PAYLOAD-TRAILER"}}
		resp := send(t, "PUT", "https://"+s3Host+"/bucket/k", strings.NewReader("5\r\nhello\r\n0\r\n\r\n"), 15, h)
		if msg, _ := refusedAs(t, resp, "unsignable-request"); !strings.Contains(msg, "aws-chunked") {
			t.Errorf("aws-chunked upload: %q, want a refusal naming aws-chunked", msg)
		}
	})
}

// TestSigV4VerifierRejectsTampering shows the verifying upstream can fail:
// a request signed with the right key passes, and the same request changed
// after signing, or signed with another secret, does not. Without this, the
// proxy tests above could pass against a verifier that accepts anything.
func TestSigV4VerifierRejectsTampering(t *testing.T) {
	p := newPKI(t, t.TempDir())
	addr := startSigV4Upstream(t, p)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: p.pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
	signed := func(secret string, tamper func(*http.Request)) verdict {
		t.Helper()
		body := []byte(`{"prompt":"hi"}`)
		req, _ := http.NewRequest("POST", "https://"+bedrockHost+"/model/m/invoke?x=1", bytes.NewReader(body))
		req.Header.Set("X-Amz-Target", "Invoke")
		sum := sha256Sum(body)
		err := sigv4.New().SignRequest(&sigv4.SignRequestInput{Request: req, PayloadHash: sum,
			Credentials: credentials.Credentials{AccessKeyID: awsTestKeyID, SecretAccessKey: secret, SessionToken: awsTestToken},
			Service:     "bedrock", Region: "us-east-1", SignatureType: v4.SignatureTypeHeader})
		if err != nil {
			t.Fatal(err)
		}
		tamper(req)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return readVerdict(t, resp)
	}
	if v := signed(awsTestSecret, func(*http.Request) {}); !v.OK {
		t.Fatalf("a correctly signed request was refused: %q", v.Reason)
	}
	for name, tc := range map[string]struct {
		secret string
		tamper func(*http.Request)
	}{
		"signed header changed": {awsTestSecret, func(r *http.Request) { r.Header.Set("X-Amz-Target", "Delete") }},
		"x-amz header added":    {awsTestSecret, func(r *http.Request) { r.Header.Set("X-Amz-Acl", "public-read") }},
		"query changed":         {awsTestSecret, func(r *http.Request) { r.URL.RawQuery = "x=2" }},
		"path changed":          {awsTestSecret, func(r *http.Request) { r.URL.Path = "/model/other/invoke" }},
		"other secret":          {"sk-test-not-the-secret-0123456789abcdef", func(*http.Request) {}},
	} {
		if v := signed(tc.secret, tc.tamper); v.OK {
			t.Errorf("%s: the verifier accepted it", name)
		}
	}
}

func sha256Sum(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestSigV4AbandonedBodyReleasesSlot: an agent that promises a body, sends
// part of it and hangs up while credproxy buffers it to sign must not keep
// the request's maxInflight slot; with maxInflight 1 a leaked slot would
// refuse every later request with 503.
func TestSigV4AbandonedBodyReleasesSlot(t *testing.T) {
	t.Setenv("CREDPROXY_TEST_AWS", awsTestCredJSON)
	p := newPKI(t, t.TempDir())
	addr := startSigV4Upstream(t, p)
	e := startProxy(t, p, "limits: {maxInflight: 1}\n"+sigv4Config, map[string]string{bedrockHost + ":443": addr})

	c, _, resp := rawConnect(t, e, bedrockHost+":443")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	tc := tls.Client(c, &tls.Config{ServerName: bedrockHost, RootCAs: e.ca, NextProtos: []string{"http/1.1"}})
	fmt.Fprintf(tc, "POST /model/m/invoke HTTP/1.1\r\nHost: %s\r\nContent-Length: 1000\r\n\r\n%s", bedrockHost, strings.Repeat("x", 10))
	_ = tc.Close()

	client := e.client(e.ca)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get("https://" + bedrockHost + "/foundation-models")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusServiceUnavailable {
			if v := readVerdict(t, resp); resp.StatusCode != http.StatusOK || !v.OK {
				t.Fatalf("request after the abandoned one: %d %q", resp.StatusCode, v.Reason)
			}
			return
		}
		msg, _ := refusedAs(t, resp, "too-many-requests")
		if time.Now().After(deadline) {
			t.Fatalf("the abandoned request still holds the only slot after 20s: %s", msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
