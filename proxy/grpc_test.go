package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// gRPC through credproxy: an HTTP/2-only client CONNECTs, credproxy
// intercepts, injects `authorization` and masks what comes back in messages,
// headers, trailers and status messages. No generated code: the health
// service for unary calls, and a hand-written ServiceDesc with a raw []byte
// codec for a bidirectional stream.

const grpcConfig = `
listen: 127.0.0.1:0
admin: 127.0.0.1:0
ca: {cert: "{{DIR}}/ca.pem", key: "{{DIR}}/ca-key.pem"}
upstream: {caFiles: ["{{UPSTREAM_CA}}"]}
credentials:
  api: {source: env, env: CREDPROXY_TEST_API_KEY}
rules:
  - name: grpc
    hosts: [grpc.example.test]
    credential: api
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
  - name: other
    hosts: [api.example.test]
    paths: [/other/]
    credential: api
    inject: {header: Authorization, value: "Bearer {{ .Value }}"}
`

// rawCodec carries []byte messages as they are: content subtype "raw".
type rawCodec struct{}

func (rawCodec) Name() string { return "raw" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case []byte:
		return m, nil
	case *[]byte:
		return *m, nil
	}
	return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*m = append((*m)[:0], data...)
	return nil
}

// The server picks a codec by content subtype from the registry.
func init() { encoding.RegisterCodec(rawCodec{}) }

// grpcUpstream is a gRPC server on 127.0.0.1 with a leaf for
// grpc.example.test from the test PKI. It records the authorization each
// call carried and echoes it back in every way a hostile server could.
type grpcUpstream struct {
	grpc_health_v1.UnimplementedHealthServer
	addr string
	mu   sync.Mutex
	auth []string
}

func (u *grpcUpstream) sawAuth(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	a := strings.Join(md.Get("authorization"), ",")
	u.mu.Lock()
	u.auth = append(u.auth, a)
	u.mu.Unlock()
	return a
}

func (u *grpcUpstream) seenAuth() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.auth...)
}

// Check answers SERVING with the authorization it saw in a header and a
// trailer (beside a custom trailer that must pass), or NotFound quoting it.
func (u *grpcUpstream) Check(ctx context.Context, req *grpc_health_v1.HealthCheckRequest) (*grpc_health_v1.HealthCheckResponse, error) {
	auth := u.sawAuth(ctx)
	if req.GetService() != "" {
		return nil, status.Errorf(codes.NotFound, "no service %q for %s", req.GetService(), auth)
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-echo-header", auth))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-echo-trailer", auth, "x-custom", "kept"))
	return &grpc_health_v1.HealthCheckResponse{Status: grpc_health_v1.HealthCheckResponse_SERVING}, nil
}

// chat is a bidirectional stream: "token?" is answered with the
// authorization, "fail" ends the call with FailedPrecondition, anything else
// is echoed; at the end it sends the count and the authorization as trailers.
func (u *grpcUpstream) chat(_ any, stream grpc.ServerStream) error {
	auth := u.sawAuth(stream.Context())
	n := 0
	for {
		var msg []byte
		err := stream.RecvMsg(&msg)
		if errors.Is(err, io.EOF) {
			stream.SetTrailer(metadata.Pairs("x-count", fmt.Sprint(n), "x-echo-trailer", auth))
			return nil
		}
		if err != nil {
			return err
		}
		n++
		reply := "echo:" + string(msg)
		switch string(msg) {
		case "token?":
			reply = "you sent " + auth
		case "fail":
			return status.Errorf(codes.FailedPrecondition, "failed after %d messages", n)
		}
		if err := stream.SendMsg([]byte(reply)); err != nil {
			return err
		}
	}
}

var chatDesc = grpc.ServiceDesc{
	ServiceName: "credproxy.test.Echo",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Chat",
		ServerStreams: true,
		ClientStreams: true,
		Handler:       func(srv any, stream grpc.ServerStream) error { return srv.(*grpcUpstream).chat(srv, stream) },
	}},
}

func startGRPCUpstream(t *testing.T, p *pki) *grpcUpstream {
	t.Helper()
	cert, err := p.ca.SignLeaf("grpc.example.test", "api.example.test")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &grpcUpstream{addr: ln.Addr().String()}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{*cert}})))
	grpc_health_v1.RegisterHealthServer(srv, u)
	srv.RegisterService(&chatDesc, u)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return u
}

// newGRPCEnv starts the gRPC upstream and credproxy routed to it, for
// grpc.example.test and api.example.test (intercepted, but no rule covers
// gRPC's paths there).
func newGRPCEnv(t *testing.T) (*env, *grpcUpstream) {
	t.Helper()
	t.Setenv("CREDPROXY_TEST_API_KEY", testKey)
	p := newPKI(t, t.TempDir())
	u := startGRPCUpstream(t, p)
	e := startProxy(t, p, grpcConfig, map[string]string{
		"grpc.example.test:443": u.addr,
		"api.example.test:443":  u.addr,
	})
	return e, u
}

// connectDialer opens each gRPC connection as an agent behind HTTPS_PROXY
// would: CONNECT to credproxy, then TLS inside the tunnel.
func (e *env) connectDialer(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", e.url.Host)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", addr, addr)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		c.Close()
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || br.Buffered() > 0 {
		c.Close()
		return nil, fmt.Errorf("CONNECT %s: status %d, %d bytes after the response", addr, resp.StatusCode, br.Buffered())
	}
	return c, nil
}

// grpcClient dials target through credproxy, trusting credproxy's CA for
// serverName; authority, if set, overrides the :authority of every call.
func (e *env) grpcClient(t *testing.T, target, serverName, authority string) *grpc.ClientConn {
	t.Helper()
	tc := &tls.Config{RootCAs: e.ca, ServerName: serverName}
	if authority != "" {
		// A fronting agent does not care whose certificate it gets; grpc
		// refuses an authority that differs from a ServerName it was given.
		tc = &tls.Config{InsecureSkipVerify: true}
	}
	opts := []grpc.DialOption{
		grpc.WithContextDialer(e.connectDialer),
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
	}
	if authority != "" {
		opts = append(opts, grpc.WithAuthority(authority))
	}
	cc, err := grpc.NewClient("passthrough:///"+target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// withPlaceholder is an agent's call context with the placeholder key it was
// given, which credproxy must replace.
func withPlaceholder() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer placeholder")
}

// noKey fails if any of the texts holds the credential.
func noKey(t *testing.T, what string, texts ...string) {
	t.Helper()
	for _, s := range texts {
		if strings.Contains(s, testKey) {
			t.Errorf("credential reached the gRPC client in %s: %q", what, s)
		}
	}
}

func mdText(md metadata.MD) string { return fmt.Sprint(md) }

func TestGRPCUnaryInjectsAndMasks(t *testing.T) {
	e, u := newGRPCEnv(t)
	health := grpc_health_v1.NewHealthClient(e.grpcClient(t, "grpc.example.test:443", "grpc.example.test", ""))
	var header, trailer metadata.MD
	resp, err := health.Check(withPlaceholder(), &grpc_health_v1.HealthCheckRequest{}, grpc.Header(&header), grpc.Trailer(&trailer))
	if err != nil {
		t.Fatalf("Check through credproxy: %v", err)
	}
	if resp.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
		t.Errorf("status %v, want SERVING", resp.GetStatus())
	}
	if got := u.seenAuth(); len(got) != 1 || got[0] != "Bearer "+testKey {
		t.Errorf("upstream saw authorization %q, want exactly [Bearer %s]", got, testKey)
	}
	if got := trailer.Get("x-custom"); len(got) != 1 || got[0] != "kept" {
		t.Errorf("custom trailer x-custom = %q, want [kept]; trailers %v", got, trailer)
	}
	if got := trailer.Get("x-echo-trailer"); len(got) != 1 || !strings.Contains(got[0], "[redacted]") {
		t.Errorf("echoing trailer = %q, want it present and masked", got)
	}
	if got := header.Get("x-echo-header"); len(got) != 1 || !strings.Contains(got[0], "[redacted]") {
		t.Errorf("echoing header = %q, want it present and masked", got)
	}
	noKey(t, "headers", mdText(header))
	noKey(t, "trailers", mdText(trailer))

	// An error status arrives with its code; its message, which quotes the
	// credential, is masked.
	_, err = health.Check(withPlaceholder(), &grpc_health_v1.HealthCheckRequest{Service: "nope"})
	st := status.Convert(err)
	if st.Code() != codes.NotFound || !strings.Contains(st.Message(), `no service "nope"`) {
		t.Errorf("got %v, want NotFound naming the service", err)
	}
	noKey(t, "a status message", st.Message())
}

func TestGRPCBidiStreamInjectsAndMasks(t *testing.T) {
	e, u := newGRPCEnv(t)
	cc := e.grpcClient(t, "grpc.example.test:443", "grpc.example.test", "")
	ctx, cancel := context.WithCancel(withPlaceholder())
	defer cancel()
	stream, err := cc.NewStream(ctx, &chatDesc.Streams[0], "/credproxy.test.Echo/Chat", grpc.ForceCodec(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	// Strictly alternate: each answer must arrive while the call is open,
	// so nothing is held back waiting for the stream to end.
	var replies []string
	for _, m := range []string{"one", "token?", "three"} {
		if err := stream.SendMsg([]byte(m)); err != nil {
			t.Fatalf("send %q: %v", m, err)
		}
		var reply []byte
		if err := stream.RecvMsg(&reply); err != nil {
			t.Fatalf("reply to %q: %v", m, err)
		}
		replies = append(replies, string(reply))
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var extra []byte
	if err := stream.RecvMsg(&extra); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v (message %q), want io.EOF (status OK)", err, extra)
	}
	if replies[0] != "echo:one" || replies[2] != "echo:three" {
		t.Errorf("replies %q, want echo:one … echo:three", replies)
	}
	if want := "you sent "; !strings.HasPrefix(replies[1], want) || !strings.Contains(replies[1], "[redacted]") {
		t.Errorf("reply to token? = %q, want %q and a mask", replies[1], want+"…")
	}
	noKey(t, "a stream message", replies...)
	trailer := stream.Trailer()
	if got := trailer.Get("x-count"); len(got) != 1 || got[0] != "3" {
		t.Errorf("trailer x-count = %q, want [3]; trailers %v", got, trailer)
	}
	noKey(t, "stream trailers", mdText(trailer))
	if got := u.seenAuth(); len(got) != 1 || got[0] != "Bearer "+testKey {
		t.Errorf("upstream saw authorization %q, want exactly [Bearer %s]", got, testKey)
	}
}

func TestGRPCStreamErrorStatusArrives(t *testing.T) {
	e, _ := newGRPCEnv(t)
	cc := e.grpcClient(t, "grpc.example.test:443", "grpc.example.test", "")
	// The call ends while the agent's side is still open. That once left
	// credproxy waiting on the agent's stream and the agent on the status:
	// bound the wait so a regression fails here instead of hanging the run.
	ctx, cancel := context.WithTimeout(withPlaceholder(), time.Minute)
	defer cancel()
	stream, err := cc.NewStream(ctx, &chatDesc.Streams[0], "/credproxy.test.Echo/Chat", grpc.ForceCodec(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"one", "fail"} {
		if err := stream.SendMsg([]byte(m)); err != nil {
			t.Fatalf("send %q: %v", m, err)
		}
	}
	var reply []byte
	if err := stream.RecvMsg(&reply); err != nil || string(reply) != "echo:one" {
		t.Fatalf("first reply %q, %v; want echo:one", reply, err)
	}
	err = stream.RecvMsg(&reply)
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || st.Message() != "failed after 2 messages" {
		t.Errorf("got %v, want FailedPrecondition \"failed after 2 messages\"", err)
	}
}

// A call whose :authority names another host than the CONNECT target is
// domain fronting: 421, and nothing reaches the upstream.
func TestGRPCAuthorityFrontingIsRefused(t *testing.T) {
	e, u := newGRPCEnv(t)
	// The tunnel goes to api.example.test (intercepted: a rule names it);
	// the calls claim grpc.example.test, whose rule injects for any path.
	cc := e.grpcClient(t, "api.example.test:443", "api.example.test", "grpc.example.test")
	_, err := grpc_health_v1.NewHealthClient(cc).Check(withPlaceholder(), &grpc_health_v1.HealthCheckRequest{})
	if err == nil {
		t.Fatal("a call with a fronted :authority succeeded")
	}
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "421") {
		t.Errorf("got %v, want the HTTP 421 it was refused with", err)
	}
	if got := u.seenAuth(); len(got) != 0 {
		t.Errorf("upstream saw %d calls after an :authority mismatch, want 0", len(got))
	}
}
