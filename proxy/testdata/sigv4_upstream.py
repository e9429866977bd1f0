"""An HTTPS upstream that verifies AWS SigV4 with botocore, for proxy tests.

It recomputes the signature of the exact request it received (method, raw
path, query, the headers the Authorization header says are signed, and the
body) with botocore's SigV4Auth / S3SigV4Auth, an implementation independent
of the Go signer credproxy uses, and answers 200 with what it saw, or 403 with
the reason. Started by sigv4_test.go with one argument, a JSON config:
{"cert": PEM path, "key": PEM path, "keys": {AKID: {"secret": S, "token": T}}}.
It prints "PORT <n>" once it listens on 127.0.0.1.

GET /echo-secret... answers with the secret key and token in the body and a
header, as an upstream that echoes what it was sent would: credproxy must mask
them.
"""

import datetime
import hashlib
import hmac
import json
import re
import ssl
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import (S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth,
                           SigV4QueryAuth)
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

CONFIG = json.load(open(sys.argv[1]))
UNSIGNED = "UNSIGNED-PAYLOAD"
AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^,]+), SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$")


class Refused(Exception):
    pass


def read_body(h):
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        out = b""
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return out, True
            out += h.rfile.read(size)
            h.rfile.readline()
    n = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(n), False


def verify(h, body):
    raw_path, _, raw_query = h.path.partition("?")
    params = urllib.parse.parse_qsl(raw_query, keep_blank_values=True, strict_parsing=False)
    qd = {k: v for k, v in params}
    query_mode = "X-Amz-Signature" in qd
    if query_mode:
        if qd.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
            raise Refused("bad X-Amz-Algorithm")
        cred, signed, sig = qd["X-Amz-Credential"], qd["X-Amz-SignedHeaders"], qd["X-Amz-Signature"]
        amz_date, token = qd.get("X-Amz-Date", ""), qd.get("X-Amz-Security-Token")
        if "X-Amz-Expires" not in qd:
            raise Refused("presigned request without X-Amz-Expires")
        params = [(k, v) for k, v in params if k != "X-Amz-Signature"]
    else:
        auths = h.headers.get_all("Authorization") or []
        if len(auths) != 1:
            raise Refused("want exactly one Authorization header, got %d" % len(auths))
        m = AUTH_RE.match(auths[0])
        if not m:
            raise Refused("Authorization is not a SigV4 header")
        cred, signed, sig = m.groups()
        amz_date, token = h.headers.get("X-Amz-Date", ""), h.headers.get("X-Amz-Security-Token")
    akid, day, region, service, term = (cred.split("/") + [""] * 5)[:5]
    if term != "aws4_request":
        raise Refused("bad credential scope")
    key = CONFIG["keys"].get(akid)
    if key is None:
        raise Refused("unknown access key id")
    if (token or None) != (key.get("token") or None):
        raise Refused("security token does not match the key's")
    when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) > 15 * 60:
        raise Refused("X-Amz-Date too far from now")
    if day != amz_date[:8]:
        raise Refused("credential scope date is not X-Amz-Date's")
    signed_list = signed.split(";")
    if "host" not in signed_list:
        raise Refused("host is not signed")
    for name in h.headers.keys():
        if name.lower().startswith("x-amz-") and name.lower() not in signed_list:
            raise Refused("header %s is not signed" % name.lower())

    s3 = service == "s3"
    sha = h.headers.get("X-Amz-Content-Sha256")
    if sha == UNSIGNED and not s3:
        raise Refused("UNSIGNED-PAYLOAD is only accepted by s3")
    if sha not in (None, UNSIGNED) and sha != hashlib.sha256(body).hexdigest():
        raise Refused("x-amz-content-sha256 does not match the body")
    if s3 and not query_mode and sha is None:
        raise Refused("s3 requires x-amz-content-sha256")

    creds = Credentials(akid, key["secret"], key.get("token"))
    if query_mode:
        auth = (S3SigV4QueryAuth if s3 else SigV4QueryAuth)(creds, service, region)
    else:
        auth = (S3SigV4Auth if s3 else SigV4Auth)(creds, service, region)
    req = AWSRequest(method=h.command, url="https://" + h.headers["Host"] + raw_path, data=body)
    req.headers = HTTPHeaders()
    for name in signed_list:
        for value in h.headers.get_all(name) or []:
            req.headers[name] = value
    req.params = params
    req.context["timestamp"] = amz_date
    canonical = auth.canonical_request(req)
    if auth.signed_headers(auth.headers_to_sign(req)) != signed:
        raise Refused("SignedHeaders lists headers the request does not carry")
    want = auth.signature(auth.string_to_sign(req, canonical), req)
    if not hmac.compare_digest(want, sig):
        raise Refused("signature mismatch")
    return {"akid": akid, "service": service, "region": region, "signed_headers": signed_list,
            "query_mode": query_mode, "token": token is not None, "payload": sha,
            "path": raw_path, "query": raw_query, "body_len": len(body)}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle_any(self):
        body, chunked = read_body(self)
        try:
            seen = verify(self, body)
            status, out = 200, {"ok": True, "chunked": chunked, **seen}
        except Refused as e:
            status, out = 403, {"ok": False, "reason": str(e)}
        except (KeyError, ValueError) as e:
            status, out = 403, {"ok": False, "reason": "malformed signature: %r" % (e,)}
        extra = {}
        if status == 200 and self.path.startswith("/echo-secret"):
            key = CONFIG["keys"][out["akid"]]
            out["echo"] = "secret=%s token=%s" % (key["secret"], key.get("token"))
            extra["X-Echo"] = key["secret"]
        data = (json.dumps(out) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any

    def log_message(self, fmt, *args):
        pass


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(CONFIG["cert"], CONFIG["key"])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("PORT %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
