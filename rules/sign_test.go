package rules

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

const signCreds = "credentials:\n  aws: {source: env, env: CREDPROXY_TEST_AWS}\n"

func TestSignConfig(t *testing.T) {
	c, err := Parse("c.yaml", []byte(signCreds+`rules:
  - name: bedrock
    hosts: [bedrock-runtime.us-east-1.amazonaws.com]
    credential: aws
    remove: [X-Api-Key]
    sign: {aws_sigv4: {service: bedrock, region: us-east-1}}
  - name: r2
    hosts: [acct.r2.cloudflarestorage.com]
    credential: aws
    sign:
      aws_sigv4: {service: s3, region: auto, payload: unsigned}
`))
	if err != nil {
		t.Fatal(err)
	}
	got := *c.Rules[0].Sign.AWSSigV4
	if want := (AWSSigV4{Service: "bedrock", Region: "us-east-1", Payload: PayloadSigned, MaxBodyBytes: DefaultMaxSignedBody}); got != want {
		t.Errorf("bedrock sign = %+v, want %+v", got, want)
	}
	if got := *c.Rules[1].Sign.AWSSigV4; got.Payload != PayloadUnsigned || got.Region != "auto" {
		t.Errorf("r2 sign = %+v, want payload unsigned, region auto", got)
	}
	if c.Rules[0].Inject != (Inject{}) || c.Rules[0].injector != nil {
		t.Errorf("a sign rule has an injection: %+v", c.Rules[0].Inject)
	}
}

func TestSignConfigErrors(t *testing.T) {
	rule := func(body string) string {
		return signCreds + "rules:\n  - name: r\n    hosts: [a.example.com]\n    credential: aws\n" + body
	}
	tests := []struct{ name, src, want string }{
		{"inject and sign", rule("    inject: {header: X, value: v}\n    sign: {aws_sigv4: {service: s3, region: us-east-1}}\n"),
			"8: rules[0].sign: set inject or sign, not both"},
		{"no method", rule("    sign: {}\n"), "7: rules[0].sign: needs a method: aws_sigv4"},
		{"null method", rule("    sign: {aws_sigv4: }\n"), "7: rules[0].sign: needs a method"},
		{"unknown method", rule("    sign: {aws_sigv2: {}}\n"), "7: rules[0].sign.aws_sigv2: unknown key (want one of: aws_sigv4)"},
		{"no service", rule("    sign:\n      aws_sigv4: {region: us-east-1}\n"), "8: rules[0].sign.aws_sigv4.service: required"},
		{"bad service", rule("    sign:\n      aws_sigv4:\n        service: Bed Rock\n        region: us-east-1\n"),
			`9: rules[0].sign.aws_sigv4.service: bad signing name "Bed Rock"`},
		{"no region", rule("    sign:\n      aws_sigv4: {service: s3}\n"), "8: rules[0].sign.aws_sigv4.region: required"},
		{"upper-case region", rule("    sign:\n      aws_sigv4:\n        service: s3\n        region: US-EAST-1\n"),
			`10: rules[0].sign.aws_sigv4.region: bad region "US-EAST-1"`},
		{"region with a slash", rule("    sign:\n      aws_sigv4:\n        service: s3\n        region: us-east-1/x\n"),
			`10: rules[0].sign.aws_sigv4.region: bad region "us-east-1/x"`},
		{"bad payload", rule("    sign:\n      aws_sigv4:\n        service: s3\n        region: us-east-1\n        payload: streaming\n"),
			`11: rules[0].sign.aws_sigv4.payload: must be signed or unsigned, not "streaming"`},
		{"maxBodyBytes zero", rule("    sign:\n      aws_sigv4:\n        service: s3\n        region: us-east-1\n        maxBodyBytes: 0\n"),
			"11: rules[0].sign.aws_sigv4.maxBodyBytes: must be between 1 and 1073741824, not 0"},
		{"maxBodyBytes unsigned", rule("    sign:\n      aws_sigv4:\n        service: s3\n        region: us-east-1\n        payload: unsigned\n        maxBodyBytes: 10\n"),
			"12: rules[0].sign.aws_sigv4.maxBodyBytes: only applies to payload: signed"},
		{"misspelt key", rule("    sign:\n      aws_sigv4:\n        servce: s3\n"),
			"9: rules[0].sign.aws_sigv4.servce: unknown key (want one of: service, region, payload, maxBodyBytes)"},
		{"sign not a mapping", rule("    sign: aws_sigv4\n"), "7: rules[0].sign: expected a mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tt.src))
			if err == nil || !hasLinePrefix(err.Error(), "c.yaml:"+tt.want) {
				t.Errorf("Parse: got error\n%v\nwant a line starting %q", err, "c.yaml:"+tt.want)
			}
		})
	}
}

const (
	testKeyID  = "AKIDRULESTEST0001"
	testSecret = "sk-test-rules-secret-0123456789abcdef"
	testToken  = "sk-test-rules-session-token-0123456789"
)

func signRule(t *testing.T, sign string) *Rule {
	t.Helper()
	c, err := Parse("c.yaml", []byte(signCreds+"rules:\n  - name: aws\n    hosts: [h.example.com]\n    credential: aws\n    sign: "+sign+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	return c.Rules[0]
}

func TestAWSCredentialFieldNames(t *testing.T) {
	for name, v := range map[string]Values{
		"credential_process fields": {Data: map[string]string{"AccessKeyId": testKeyID, "SecretAccessKey": testSecret, "SessionToken": testToken}},
		"vault aws engine":          {Data: map[string]string{"access_key": testKeyID, "secret_key": testSecret, "security_token": testToken}},
		"shared credentials file":   {Data: map[string]string{"aws_access_key_id": testKeyID, "aws_secret_access_key": testSecret, "aws_session_token": testToken}},
		"credential_process JSON as the value": {Value: `{"Version": 1, "AccessKeyId": "` + testKeyID + `", "SecretAccessKey": "` +
			testSecret + `", "SessionToken": "` + testToken + `", "Expiration": "2030-01-01T00:00:00Z"}`, Data: map[string]string{"value": "x"}},
	} {
		c, err := awsCredentials(v)
		if err != nil || c.AccessKeyID != testKeyID || c.SecretAccessKey != testSecret || c.SessionToken != testToken {
			t.Errorf("%s: got %q/%q/%q, %v; want the three fields", name, c.AccessKeyID, c.SecretAccessKey, c.SessionToken, err)
		}
	}
	// Vault's engine answers security_token: null for an IAM user's key.
	c, err := awsCredentials(Values{Data: map[string]string{"access_key": testKeyID, "secret_key": testSecret, "security_token": ""}})
	if err != nil || c.SessionToken != "" {
		t.Errorf("no token: %+v, %v; want a key without a session token", c.SessionToken, err)
	}
}

func TestAWSCredentialErrorsNameFieldsNotValues(t *testing.T) {
	tests := []struct {
		name string
		v    Values
		want string
	}{
		{"no secret", Values{Data: map[string]string{"AccessKeyId": testKeyID, "SessionToken": testToken}},
			"no SecretAccessKey field (nor secret_key, aws_secret_access_key)"},
		{"single value", Values{Value: testSecret, Data: map[string]string{"value": testSecret}}, "no AccessKeyId field"},
		{"broken JSON", Values{Value: `{"AccessKeyId": "` + testKeyID + `", "SecretAccessKey": "` + testSecret}, "is not a JSON object"},
		{"CRLF in token", Values{Data: map[string]string{"AccessKeyId": testKeyID, "SecretAccessKey": testSecret,
			"SessionToken": testToken + "\r\nX-Evil: 1"}}, "SessionToken holds a character that cannot be sent"},
		{"slash in key id", Values{Data: map[string]string{"AccessKeyId": testKeyID + "/x", "SecretAccessKey": testSecret}},
			"AccessKeyId holds a character"},
	}
	r := signRule(t, "{aws_sigv4: {service: bedrock, region: us-east-1}}")
	for _, tt := range tests {
		req, _ := http.NewRequest("GET", "https://h.example.com/", nil)
		err := r.SignRequest(req, tt.v, nil, time.Now())
		if err == nil || !errors.Is(err, ErrInject) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want ErrInject saying %q", tt.name, err, tt.want)
			continue
		}
		for _, s := range []string{testSecret, testToken, testKeyID} {
			if strings.Contains(err.Error(), s) {
				t.Errorf("%s: error %q holds a value of the credential", tt.name, err)
			}
		}
	}
}

// TestSignRequestSameForEveryFieldSpelling signs one request at one time
// with the same key spelt three ways: the signature must not change.
func TestSignRequestSameForEveryFieldSpelling(t *testing.T) {
	r := signRule(t, "{aws_sigv4: {service: bedrock, region: us-east-1}}")
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	var auths []string
	for _, v := range []Values{
		{Data: map[string]string{"AccessKeyId": testKeyID, "SecretAccessKey": testSecret, "SessionToken": testToken}},
		{Data: map[string]string{"access_key": testKeyID, "secret_key": testSecret, "security_token": testToken}},
		{Value: `{"AccessKeyId":"` + testKeyID + `","SecretAccessKey":"` + testSecret + `","SessionToken":"` + testToken + `"}`},
	} {
		req, _ := http.NewRequest("POST", "https://h.example.com/model/m%3A0/invoke?b=2&a=1", nil)
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAPLACEHOLDER/x")
		req.Header.Set("X-Amz-Security-Token", "placeholder")
		if err := r.SignRequest(req, v, make([]byte, 32), at); err != nil {
			t.Fatal(err)
		}
		if got := req.Header.Get("X-Amz-Security-Token"); got != testToken {
			t.Errorf("X-Amz-Security-Token = %q, want the credential's", got)
		}
		if req.Header.Get("X-Amz-Date") != "20261202T100000Z" || req.URL.RawQuery != "b=2&a=1" {
			t.Errorf("X-Amz-Date %q, query %q: want the signing time and the query untouched", req.Header.Get("X-Amz-Date"), req.URL.RawQuery)
		}
		auths = append(auths, req.Header.Get("Authorization"))
	}
	if !strings.HasPrefix(auths[0], "AWS4-HMAC-SHA256 Credential="+testKeyID+"/20261202/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=") {
		t.Errorf("Authorization = %q", auths[0])
	}
	if auths[1] != auths[0] || auths[2] != auths[0] {
		t.Errorf("signatures differ by field spelling:\n%s\n%s\n%s", auths[0], auths[1], auths[2])
	}
}

func TestSignRequestRefusals(t *testing.T) {
	v := Values{Data: map[string]string{"AccessKeyId": testKeyID, "SecretAccessKey": testSecret}}
	s3 := signRule(t, "{aws_sigv4: {service: s3, region: us-east-1, payload: unsigned}}")
	for name, mk := range map[string]func() *http.Request{
		"bad escape in query": func() *http.Request {
			r, _ := http.NewRequest("GET", "https://h.example.com/k", nil)
			r.URL.RawQuery = "a=%zz"
			return r
		},
		"semicolon in query": func() *http.Request {
			r, _ := http.NewRequest("GET", "https://h.example.com/k", nil)
			r.URL.RawQuery = "a=1;b=2"
			return r
		},
		"aws-chunked trailer upload": func() *http.Request {
			r, _ := http.NewRequest("PUT", "https://h.example.com/k", strings.NewReader("x"))
			r.Header.Set("X-Amz-Content-Sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
			return r
		},
		"aws-chunked encoding": func() *http.Request {
			r, _ := http.NewRequest("PUT", "https://h.example.com/k", strings.NewReader("x"))
			r.Header.Set("Content-Encoding", "gzip, AWS-Chunked")
			return r
		},
	} {
		req := mk()
		if err := s3.SignRequest(req, v, nil, time.Now()); !errors.Is(err, ErrUnsignable) {
			t.Errorf("%s: err = %v, want ErrUnsignable", name, err)
		}
		if req.Header.Get("Authorization") != "" {
			t.Errorf("%s: refused, yet signed", name)
		}
	}
}

func TestSignRequestPresigned(t *testing.T) {
	v := Values{Data: map[string]string{"AccessKeyId": testKeyID, "SecretAccessKey": testSecret, "SessionToken": testToken}}
	s3 := signRule(t, "{aws_sigv4: {service: s3, region: us-east-1}}")
	req, _ := http.NewRequest("GET", "https://h.example.com/b/k?x-amz-credential=AKIAPLACEHOLDER%2Fx&X-Amz-Signature=00&X-Amz-Security-Token=p&v=a+b", nil)
	if s3.SignsPayload(req) {
		t.Error("a presigned S3 request hashes its payload; S3 wants UNSIGNED-PAYLOAD")
	}
	if err := s3.SignRequest(req, v, nil, time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	q := req.URL.Query()
	if q.Get("X-Amz-Credential") != testKeyID+"/20261202/us-east-1/s3/aws4_request" || len(q["X-Amz-Signature"]) != 1 ||
		q.Get("x-amz-credential") != "" || q.Get("X-Amz-Security-Token") != testToken || q.Get("X-Amz-Expires") != "300" || q.Get("v") != "a b" {
		t.Errorf("query = %v; want credproxy's query signature alone, the token, a default X-Amz-Expires and v kept", q)
	}
	if req.Header.Get("Authorization") != "" || req.Header.Get("X-Amz-Date") != "" {
		t.Errorf("a query-signed request also got signature headers: %v", req.Header)
	}
	if strings.Contains(req.URL.RawQuery, "+") {
		t.Errorf("query %q spells a space as '+'; SigV4 wants %%20", req.URL.RawQuery)
	}
}

func TestSigningValues(t *testing.T) {
	r := signRule(t, "{aws_sigv4: {service: s3, region: us-east-1}}")
	got := r.SigningValues(Values{Value: `{"AccessKeyId":"` + testKeyID + `","SecretAccessKey":"` + testSecret + `","SessionToken":"` + testToken + `"}`})
	if strings.Join(got, ",") != testKeyID+","+testSecret+","+testToken {
		t.Errorf("SigningValues = %q, want key id, secret and token", got)
	}
	inject, err := Parse("c.yaml", []byte(signCreds+"rules:\n  - name: r\n    hosts: [h]\n    credential: aws\n    inject: {header: X, value: '{{ .Value }}'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := inject.Rules[0].SigningValues(Values{Value: "v"}); got != nil {
		t.Errorf("an injecting rule's SigningValues = %q, want nil", got)
	}
}

// TestSignRequestDropsStraySignatureParams: signature parameters in the
// query of a header-signed request (a token or date the agent put there) are
// dropped, not signed and sent beside credproxy's headers.
func TestSignRequestDropsStraySignatureParams(t *testing.T) {
	v := Values{Data: map[string]string{"AccessKeyId": testKeyID, "SecretAccessKey": testSecret}}
	r := signRule(t, "{aws_sigv4: {service: execute-api, region: eu-west-1}}")
	req, _ := http.NewRequest("GET", "https://h.example.com/p?a=1&X-Amz-Security-Token=placeholder&x-amz-date=1&b=two%20words", nil)
	if err := r.SignRequest(req, v, make([]byte, 32), time.Now()); err != nil {
		t.Fatal(err)
	}
	if req.URL.RawQuery != "a=1&b=two%20words" || req.Header.Get("Authorization") == "" || req.Header.Get("X-Amz-Security-Token") != "" {
		t.Errorf("query %q, headers %v: want a=1&b=two%%20words, a header signature and no token", req.URL.RawQuery, req.Header)
	}
}

func BenchmarkSignRequest(b *testing.B) {
	c, err := Parse("c.yaml", []byte(signCreds+"rules:\n  - name: aws\n    hosts: [h]\n    credential: aws\n    sign: {aws_sigv4: {service: bedrock, region: us-east-1}}\n"))
	if err != nil {
		b.Fatal(err)
	}
	r := c.Rules[0]
	v := Values{Data: map[string]string{"AccessKeyId": testKeyID, "SecretAccessKey": testSecret, "SessionToken": testToken}}
	hash := make([]byte, 32)
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest("POST", "https://bedrock-runtime.us-east-1.amazonaws.com/model/m%3A0/invoke?a=1", nil)
		req.Header.Set("Content-Type", "application/json")
		if err := r.SignRequest(req, v, hash, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}
