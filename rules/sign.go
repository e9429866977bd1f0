package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/aws/smithy-go/aws-http-auth/credentials"
	"github.com/aws/smithy-go/aws-http-auth/sigv4"
	v4 "github.com/aws/smithy-go/aws-http-auth/v4"
	"gopkg.in/yaml.v3"
)

// Sign is a rule's `sign:` block: instead of injecting the credential into
// one slot, credproxy signs the whole request with it. A rule has exactly
// one of inject: and sign:, and sign: exactly one method.
type Sign struct {
	AWSSigV4 *AWSSigV4 // `aws_sigv4:`
}

// AWSSigV4 signs with AWS Signature Version 4, with the credential's
// AccessKeyId, SecretAccessKey and (optional) SessionToken.
type AWSSigV4 struct {
	Service string // signing name, as in the credential scope: bedrock, s3, execute-api
	Region  string // us-east-1; "auto" for S3-compatible stores that use it
	// Payload is PayloadSigned (the default: the body is buffered, up to
	// MaxBodyBytes, and its SHA-256 signed) or PayloadUnsigned (the body
	// streams through as UNSIGNED-PAYLOAD, which S3 accepts and most other
	// services refuse).
	Payload      string
	MaxBodyBytes int // signed payloads only; a larger body is refused
}

// Payload values of AWSSigV4.
const (
	PayloadSigned   = "signed"
	PayloadUnsigned = "unsigned"
)

// DefaultMaxSignedBody is the largest body buffered to sign when a rule
// sets no maxBodyBytes; maxSignedBody is the most a rule may set.
const (
	DefaultMaxSignedBody = 10 << 20
	maxSignedBody        = 1 << 30
)

// ErrUnsignable marks a request credproxy will not sign as sent (a query it
// cannot canonicalise, an aws-chunked upload whose chunks carry the agent's
// own signatures). The message says why and never holds a credential.
var ErrUnsignable = errors.New("request cannot be signed")

// sign decodes a rule's `sign:` block; nil when the rule has none.
func (l *loader) sign(n *yaml.Node, field string) *Sign {
	if resolve(n) == nil {
		return nil
	}
	f := l.fields(n, field, "aws_sigv4")
	s := &Sign{}
	if resolve(f["aws_sigv4"]) != nil {
		field := join(field, "aws_sigv4")
		a := l.fields(f["aws_sigv4"], field, "service", "region", "payload", "maxBodyBytes")
		s.AWSSigV4 = &AWSSigV4{
			Service:      l.str(a["service"], join(field, "service"), ""),
			Region:       l.str(a["region"], join(field, "region"), ""),
			Payload:      l.str(a["payload"], join(field, "payload"), PayloadSigned),
			MaxBodyBytes: l.integer(a["maxBodyBytes"], join(field, "maxBodyBytes"), DefaultMaxSignedBody),
		}
	}
	return s
}

var (
	// A signing name as AWS spells them: bedrock, s3, execute-api, s3-outposts.
	serviceSyntax = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,62}$`)
	// An AWS region (us-east-1, us-gov-west-1, eu-isoe-west-1); it goes into
	// the credential scope, where a '/' or a space would break it.
	regionSyntax = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$`)
)

// compileSign checks a rule's sign: block. It reports whether the rule has
// one, in which case it has no inject: to compile.
func (l *loader) compileSign(r *Rule, field string) bool {
	sf := join(field, "sign")
	if r.Sign == nil && !l.has(sf) {
		return false
	}
	if l.has(join(field, "inject")) {
		l.errf(sf, "set inject or sign, not both")
	}
	if r.Sign == nil || r.Sign.AWSSigV4 == nil {
		l.errf(sf, "needs a method: aws_sigv4: {service: ..., region: ...}")
		r.Sign = nil
		return true
	}
	a, af := r.Sign.AWSSigV4, join(sf, "aws_sigv4")
	switch {
	case a.Service == "":
		l.errf(join(af, "service"), "required: the service's signing name, such as bedrock or s3")
	case !serviceSyntax.MatchString(a.Service):
		l.errf(join(af, "service"), "bad signing name %q: want lower-case letters, digits, '-' and '.', as in bedrock or execute-api", a.Service)
	}
	switch {
	case a.Region == "":
		l.errf(join(af, "region"), "required: an AWS region such as us-east-1")
	case a.Region != "auto" && !regionSyntax.MatchString(a.Region):
		l.errf(join(af, "region"), "bad region %q: want an AWS region such as us-east-1 (or auto)", a.Region)
	}
	switch a.Payload {
	case PayloadSigned:
		l.checkInt(join(af, "maxBodyBytes"), a.MaxBodyBytes, 1, maxSignedBody)
	case PayloadUnsigned:
		if l.has(join(af, "maxBodyBytes")) {
			l.errf(join(af, "maxBodyBytes"), "only applies to payload: signed (an unsigned body is streamed, never buffered)")
		}
	default:
		l.errf(join(af, "payload"), "must be signed or unsigned, not %q", a.Payload)
	}
	return true
}

// awsFieldNames are the names a credential's fields may go by: the AWS
// credential_process output (what `aws configure export-credentials
// --format process` prints), Vault's AWS secrets engine, and the shared
// credentials file.
var awsFieldNames = [3][]string{
	{"AccessKeyId", "access_key", "aws_access_key_id"},
	{"SecretAccessKey", "secret_key", "aws_secret_access_key"},
	{"SessionToken", "security_token", "aws_session_token"},
}

// awsCredentials finds the AWS key in v: in its fields, or, for a source
// that returns one value (env, file), in that value as a credential_process
// JSON object. Errors name fields, never values.
func awsCredentials(v Values) (credentials.Credentials, error) {
	fields := v.Data
	if _, ok := lookup(fields, awsFieldNames[0]); !ok && strings.HasPrefix(strings.TrimSpace(v.Value), "{") {
		var obj map[string]any
		// The decoder's error is dropped: it may quote the value.
		if json.Unmarshal([]byte(v.Value), &obj) != nil {
			return credentials.Credentials{}, errors.New("the credential's value starts with { but is not a JSON object")
		}
		fields = make(map[string]string, len(obj))
		for k, x := range obj {
			if s, ok := x.(string); ok {
				fields[k] = s
			}
		}
	}
	var got [3]string
	for i, names := range awsFieldNames {
		s, ok := lookup(fields, names)
		if !ok && i < 2 {
			return credentials.Credentials{}, fmt.Errorf("the credential has no %s field (nor %s)", names[0], strings.Join(names[1:], ", "))
		}
		// A CR or LF would forge header lines; the key id also goes into
		// the Authorization header's Credential=ID/scope list.
		bad := "\x00\r\n\t "
		if i == 0 {
			bad += "/,="
		}
		if strings.ContainsAny(s, bad) || strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r >= 0x7f }) >= 0 {
			return credentials.Credentials{}, fmt.Errorf("the credential's %s holds a character that cannot be sent", names[0])
		}
		got[i] = s
	}
	return credentials.Credentials{AccessKeyID: got[0], SecretAccessKey: got[1], SessionToken: got[2]}, nil
}

// lookup returns the first non-empty field of m named in names.
func lookup(m map[string]string, names []string) (string, bool) {
	for _, n := range names {
		if s := m[n]; s != "" {
			return s, true
		}
	}
	return "", false
}

// SigningValues lists what signing sends or derives from v that an upstream
// must not echo to the agent: the secret key, the session token and (not a
// secret, but it names the account's key) the access key id. Nil for a rule
// that does not sign or a credential without the fields. The per-request
// signature is not listed: it is a fresh value on every request and would
// push real secrets out of the proxy's bounded echo memory.
func (r *Rule) SigningValues(v Values) []string {
	if r.Sign == nil {
		return nil
	}
	c, err := awsCredentials(v)
	if err != nil {
		return nil
	}
	return []string{c.AccessKeyID, c.SecretAccessKey, c.SessionToken}
}

// The agent's own signature, made with its placeholder key: headers, and the
// query parameters of a presigned URL. All are replaced, never kept beside
// credproxy's.
var (
	agentSigHeaders = []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-Sha256"}
	agentSigParams  = []string{"x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signedheaders",
		"x-amz-signature", "x-amz-security-token"}
)

// presignExpires is X-Amz-Expires for a presigned request that has none.
const presignExpires = "300"

// SignsPayload reports whether signing req covers its body's SHA-256: the
// caller then reads the body (at most Sign.AWSSigV4.MaxBodyBytes) and passes
// its hash to SignRequest. A presigned S3 request is always UNSIGNED-PAYLOAD.
func (r *Rule) SignsPayload(req *http.Request) bool {
	a := r.Sign.AWSSigV4
	if a.Payload != PayloadSigned {
		return false
	}
	if !isS3(a.Service) {
		return true
	}
	q, err := url.ParseQuery(req.URL.RawQuery)
	return err != nil || !presigned(q) // a bad query is refused by SignRequest

}

// SignRequest signs req for the rule with AWS SigV4, as the request will
// leave: it must be the last change made to req before the transport writes
// it, since the host, path, query and x-amz-* headers signed are those in req
// now. It first drops the agent's placeholder signature (Authorization,
// X-Amz-Date, X-Amz-Security-Token, X-Amz-Content-Sha256, and a presigned
// URL's X-Amz-* parameters, which are then re-signed in the query).
// bodyHash is the body's SHA-256 when SignsPayload, else nil
// (UNSIGNED-PAYLOAD). Errors wrap ErrInject (the credential) or ErrUnsignable
// (the request) and never contain a value of v.
func (r *Rule) SignRequest(req *http.Request, v Values, bodyHash []byte, now time.Time) error {
	a := r.Sign.AWSSigV4
	creds, err := awsCredentials(v)
	if err != nil {
		return fmt.Errorf("rule %q: %w: %w", r.Name, ErrInject, err)
	}
	if err := checkNotAWSChunked(req); err != nil {
		return fmt.Errorf("rule %q: %w: %w", r.Name, ErrUnsignable, err)
	}
	query, err := url.ParseQuery(req.URL.RawQuery)
	if err != nil {
		// What the signer would canonicalise (the pairs that parse) and what
		// the upstream reads would differ.
		return fmt.Errorf("rule %q: %w: the query string has a bad %%-escape or a ';', which SigV4 cannot canonicalise", r.Name, ErrUnsignable)
	}
	for _, h := range agentSigHeaders {
		delete(req.Header, h)
	}
	sigType := v4.SignatureTypeHeader
	if presigned(query) {
		sigType = v4.SignatureTypeQueryString
		if query.Get("X-Amz-Expires") == "" {
			query.Set("X-Amz-Expires", presignExpires)
		}
	}
	stripped := false
	for k := range query {
		if containsFold(agentSigParams, k) {
			delete(query, k)
			stripped = true
		}
	}
	if stripped || sigType == v4.SignatureTypeQueryString {
		// Encode escapes a literal '+' as %2B, so only spaces become %20,
		// which is how SigV4 spells them.
		req.URL.RawQuery = strings.ReplaceAll(query.Encode(), "+", "%20")
	}
	if bodyHash == nil {
		bodyHash = v4.UnsignedPayload()
	}
	s3 := isS3(a.Service)
	signer := sigv4.New(func(o *v4.SignerOptions) {
		o.DisableDoublePathEscape = s3 // S3 alone encodes the path once
		// S3 requires the header; it also tells any service that accepts
		// UNSIGNED-PAYLOAD that the body is not hashed.
		o.AddPayloadHashHeader = sigType == v4.SignatureTypeHeader && (s3 || string(bodyHash) == string(v4.UnsignedPayload()))
	})
	err = signer.SignRequest(&sigv4.SignRequestInput{
		Request: req, PayloadHash: bodyHash, Credentials: creds,
		Service: a.Service, Region: a.Region, Time: now, SignatureType: sigType,
	})
	if err != nil { // the signer fails only on reading a body, which it is not given
		return fmt.Errorf("rule %q: %w: sigv4: %s", r.Name, ErrInject, scrub(err.Error(), v))
	}
	return nil
}

// checkNotAWSChunked refuses an aws-chunked upload: its chunks (or trailer)
// were framed, and maybe signed, for the agent's key, and re-signing only the
// headers would let the upstream store the framing as data or refuse it.
func checkNotAWSChunked(req *http.Request) error {
	sha := req.Header.Get("X-Amz-Content-Sha256")
	if strings.HasPrefix(sha, "STREAMING-") || strings.Contains(strings.ToLower(req.Header.Get("Content-Encoding")), "aws-chunked") {
		return errors.New("aws-chunked streaming uploads are not re-signed: configure the SDK to send plain bodies " +
			"(for example AWS_REQUEST_CHECKSUM_CALCULATION=when_required)")
	}
	return nil
}

// presigned reports whether a query carries a SigV4 query signature.
func presigned(q url.Values) bool {
	for k := range q {
		if containsFold(presignMarkers, k) {
			return true
		}
	}
	return false
}

var presignMarkers = []string{"x-amz-signature", "x-amz-credential", "x-amz-algorithm"}

func isS3(service string) bool { return service == "s3" || strings.HasPrefix(service, "s3-") }

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}
