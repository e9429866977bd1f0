// credproxy's Node preload, loaded with NODE_OPTIONS="--import <this file>".
// Node's built-in fetch ignores HTTPS_PROXY before Node 22.21 and 24.5; the
// undici package next to this file installs a global dispatcher that reads
// HTTPS_PROXY, HTTP_PROXY and NO_PROXY, and Node's fetch uses it. Where the
// Node version honours NODE_USE_ENV_PROXY=1 itself, this does nothing. It
// never stops the agent: if undici is missing it prints one line and returns.
import { createRequire } from 'node:module';

const [major, minor] = process.versions.node.split('.').map(Number);
const nativeProxy = process.env.NODE_USE_ENV_PROXY === '1' &&
  (major > 24 || (major === 24 && minor >= 5) || (major === 22 && minor >= 21));

if (!nativeProxy) {
  try {
    const { setGlobalDispatcher, EnvHttpProxyAgent } = createRequire(import.meta.url)('undici');
    // undici 6 warns on every start that EnvHttpProxyAgent is experimental;
    // the agent did not ask for it, so keep that one line off its stderr.
    const emitWarning = process.emitWarning;
    process.emitWarning = (w, ...rest) => {
      const code = typeof rest[0] === 'object' ? rest[0]?.code : rest[1];
      if (code !== 'UNDICI-EHPA') emitWarning.call(process, w, ...rest);
    };
    try {
      setGlobalDispatcher(new EnvHttpProxyAgent());
    } finally {
      process.emitWarning = emitWarning;
    }
  } catch (err) {
    process.stderr.write(`credproxy preload: fetch will not use HTTPS_PROXY: cannot load undici next to ${new URL('.', import.meta.url).pathname} (${err.code ?? err.message}); run: credproxy env --install-node\n`);
  }
}
