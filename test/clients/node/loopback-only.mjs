// Loaded with `node --import` by test/clients (not through NODE_OPTIONS, which
// is credproxy env's): refuses any connection off loopback, so a client that
// ignored HTTPS_PROXY fails at once instead of reaching for the real API.
import net from "node:net";
import tls from "node:tls";

const loopback = (host) => host === undefined || host === "localhost" || host === "::1" || /^127\./.test(host);

function guard(orig, name) {
  return function (...args) {
    const a = args[0];
    let host;
    if (a !== null && typeof a === "object") {
      host = a.socket ? undefined : (a.host ?? a.hostname);
    } else if (typeof a === "number" || /^\d+$/.test(String(a))) {
      host = typeof args[1] === "string" ? args[1] : undefined;
    }
    if (!loopback(host)) {
      throw new Error(`${name} to ${host}: the client went around the proxy (test/clients allows loopback only)`);
    }
    return orig.apply(this, args);
  };
}

net.connect = guard(net.connect, "net.connect");
net.createConnection = guard(net.createConnection, "net.createConnection");
tls.connect = guard(tls.connect, "tls.connect");
